package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// runConfig runs `config set|get`.
func runConfig(ctx context.Context, args []string) error {
	return dispatch(ctx, "config", []subverb{
		{"set", "store a node's (or a group's) configuration; it takes effect at the next configuration_update restart", runConfigSet},
		{"get", "show the configuration stored for a node (or a group)", runConfigGet},
	}, args)
}

// nodeConfigDoc is what a node reads from ORCH_CONFIG.
type nodeConfigDoc struct {
	ConfigVersion string         `json:"config_version"`
	Settings      map[string]any `json:"settings"`
}

// configTarget is the ORCH_CONFIG key a config verb works on.
type configTarget struct {
	node, group string
}

func (t configTarget) key() string {
	if t.group != "" {
		return "group." + t.group
	}
	return t.node
}

func (t configTarget) String() string {
	if t.group != "" {
		return "group " + t.group
	}
	return t.node
}

// target reads NODE or --group G (exactly one).
func configTargetArg(pos []string, group string, groupSet bool, usage string) (configTarget, error) {
	if groupSet {
		if len(pos) > 0 {
			return configTarget{}, usageErr("give NODE or --group, not both (usage: %s)", usage)
		}
		if !schema.ValidToken(group) {
			return configTarget{}, usageErr("--group %q: must be 1..64 letters, digits, '-' or '_'", group)
		}
		return configTarget{group: group}, nil
	}
	if len(pos) == 0 {
		return configTarget{}, usageErr("expected NODE or --group G (usage: %s)", usage)
	}
	node, err := nodeArg(pos, usage)
	return configTarget{node: node}, err
}

// configBucket opens ORCH_CONFIG (a missing bucket is exit 3: run init).
func configBucket(ctx context.Context, conn *bus.Conn) (jetstream.KeyValue, error) {
	bs, err := bus.NewStore(conn)
	if err != nil {
		return nil, err
	}
	kv, err := bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, fmt.Errorf("%w: bucket %s not found (run `restartcoord init`)", bus.ErrStoreMissing, schema.BucketConfig)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return nil, &exitError{code: exitNoNATS, err: fmt.Errorf("opening %s: %w", schema.BucketConfig, err)}
	case err != nil:
		return nil, fmt.Errorf("opening %s: %w", schema.BucketConfig, err)
	}
	return kv, nil
}

const configSetUsage = "restartcoord config set NODE|--group G --version V [--file settings.json] [--json] [-s URL] [--timeout DURATION]"

func runConfigSet(ctx context.Context, args []string) error {
	o := newOpsFlags("config set", configSetUsage)
	group := o.fs.String("group", "", "store the configuration of every node of group G that has no key of its own")
	ver := o.fs.String("version", "", "config_version to store (1..64 characters); health reports it once applied")
	file := o.fs.String("file", "", "JSON file holding the settings object")
	pos, err := parse(o.fs, args, configSetUsage)
	if err != nil {
		return err
	}
	set := o.set()
	target, err := configTargetArg(pos, *group, set["group"], configSetUsage)
	if err != nil {
		return err
	}
	if *ver == "" || len(*ver) > 64 || !utf8.ValidString(*ver) {
		return usageErr("--version must be 1..64 characters, got %q", *ver)
	}
	doc := nodeConfigDoc{ConfigVersion: *ver, Settings: map[string]any{}}
	if set["file"] {
		if doc.Settings, err = readSettings(*file); err != nil {
			return err
		}
	}
	value, err := json.Marshal(doc)
	if err != nil {
		return err
	}

	conn, err := o.dial(ctx, "config")
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, o.conn.wait(defaultQueryWait))
	defer cancel()
	kv, err := configBucket(cctx, conn)
	if err != nil {
		return err
	}
	var prev *nodeConfigDoc
	if e, err := kv.Get(cctx, target.key()); err == nil {
		var p nodeConfigDoc
		if json.Unmarshal(e.Value(), &p) == nil {
			prev = &p
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("reading %s key %s: %w", schema.BucketConfig, target.key(), err)
	}
	rev, err := kv.Put(cctx, target.key(), value)
	if err != nil {
		return fmt.Errorf("writing %s key %s: %w", schema.BucketConfig, target.key(), err)
	}
	if *o.asJSON {
		return printJSON(map[string]any{"bucket": schema.BucketConfig, "key": target.key(), "revision": rev, "config": doc})
	}
	was := "new key"
	if prev != nil {
		was = "was version " + prev.ConfigVersion
	}
	fmt.Fprintf(opsOut, "stored configuration version %s for %s (%s key %s, revision %d; %s)\n",
		doc.ConfigVersion, target, schema.BucketConfig, target.key(), rev, was)
	fmt.Fprintf(opsOut, "  settings: %d keys\n", len(doc.Settings))
	if prev != nil && len(prev.Settings) > 0 && !set["file"] {
		fmt.Fprintf(opsOut, "  note: the previous entry had %d settings; this one has none (give --file to set them)\n", len(prev.Settings))
	}
	if target.group != "" {
		fmt.Fprintf(opsOut, "It takes effect on each node of group %s without a key of its own at that node's next configuration_update restart:\n"+
			"  restartcoord restart NODE --reason configuration_update\n", target.group)
	} else {
		fmt.Fprintf(opsOut, "It takes effect at %s's next configuration_update restart:\n"+
			"  restartcoord restart %s --reason configuration_update\n", target.node, target.node)
	}
	return nil
}

// readSettings reads the settings file, which must hold one JSON object.
func readSettings(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr("--file: %v", err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, usageErr("--file %s: not valid JSON: %v", path, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, usageErr("--file %s: the settings must be a JSON object ({...}), got %s", path, jsonKind(v))
	}
	return m, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

const configGetUsage = "restartcoord config get NODE|--group G [--json] [-s URL] [--timeout DURATION]"

func runConfigGet(ctx context.Context, args []string) error {
	o := newOpsFlags("config get", configGetUsage)
	group := o.fs.String("group", "", "show the configuration of group G")
	pos, err := parse(o.fs, args, configGetUsage)
	if err != nil {
		return err
	}
	target, err := configTargetArg(pos, *group, o.set()["group"], configGetUsage)
	if err != nil {
		return err
	}
	conn, err := o.dial(ctx, "config")
	if err != nil {
		return err
	}
	defer conn.Close()
	wait := o.conn.wait(defaultQueryWait)
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	kv, err := configBucket(cctx, conn)
	if err != nil {
		return err
	}
	// A node without its own key takes its group's: ask the node which
	// group it is in (and which version it runs).
	var health *schema.Health
	if target.node != "" {
		hctx, hcancel := context.WithTimeout(cctx, min(3*time.Second, wait))
		var h schema.Health
		if conn.RequestJSON(hctx, schema.NodeSubject(target.node, schema.OpHealth), map[string]any{"include_reboot_readiness": false}, nil, &h) == nil {
			health = &h
		}
		hcancel()
	}
	keys := []string{target.key()}
	if health != nil && health.Group != "" {
		keys = append(keys, "group."+health.Group)
	}
	var entry jetstream.KeyValueEntry
	for _, k := range keys {
		e, err := kv.Get(cctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s key %s: %w", schema.BucketConfig, k, err)
		}
		entry = e
		break
	}
	if entry == nil {
		msg := fmt.Sprintf("no configuration stored for %s in %s (keys tried: %v)", target, schema.BucketConfig, keys)
		if health != nil {
			msg += fmt.Sprintf("; %s runs config_version %s (from its --config file, or the default 0)", target.node, orDash(health.ConfigVersion))
		}
		return &exitError{code: exitFailed, err: errors.New(msg)}
	}
	if *o.asJSON {
		return printRaw(entry.Value())
	}
	var doc struct {
		ConfigVersion string                     `json:"config_version"`
		Settings      map[string]json.RawMessage `json:"settings"`
	}
	if err := json.Unmarshal(entry.Value(), &doc); err != nil {
		return fmt.Errorf("%s key %s does not hold a configuration: %w", schema.BucketConfig, entry.Key(), err)
	}
	fmt.Fprintf(opsOut, "configuration of %s (%s key %s, revision %d, written %s)\n", target, schema.BucketConfig,
		entry.Key(), entry.Revision(), fmtTime(entry.Created()))
	f := &facts{}
	f.add("config_version", "%s", orDash(doc.ConfigVersion))
	names := make([]string, 0, len(doc.Settings))
	for k := range doc.Settings {
		names = append(names, k)
	}
	sort.Strings(names)
	items := make([]string, len(names))
	for i, k := range names {
		items[i] = k + ": " + compactJSON(doc.Settings[k])
	}
	f.list("settings", items, "none")
	if health != nil {
		running := health.ConfigVersion
		note := "the stored version is applied"
		if running != doc.ConfigVersion {
			note = fmt.Sprintf("the stored version takes effect at its next configuration_update restart (restartcoord restart %s --reason configuration_update)", target.node)
		}
		f.add("running", "%s runs config_version %s; %s", target.node, orDash(running), note)
	}
	f.write(opsOut, "  ")
	return nil
}

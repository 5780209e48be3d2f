package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// operatorVerbs lists the verbs that drive nodes over NATS.
func operatorVerbs() []verb {
	return []verb{
		{"restart", "restart a node's worker (graceful or emergency) and print the result", runRestart},
		{"health", "show a node's health (exit 1 when unhealthy)", runHealth},
		{"status", "show a node's restart phase, and with --history its recent restarts", runStatus},
		{"prepare", "ask a node whether it is ready for shutdown (exit 1 when not)", runPrepare},
		{"reconnect-test", "test that a node's client sessions can ride a restart (exit 1 unless pass)", runReconnectTest},
		{"state", "back up, list or restore a node's state (backup, backups, restore)", runState},
		{"config", "set or get a node's configuration in " + schema.BucketConfig + " (set, get)", runConfig},
		{"task", "use a node's task API (create, get, list, update, complete, fail)", runTask},
		{"clients", "list a node's client sessions with buffer depth and last activity", runClients},
		{"nodes", "list the cluster's nodes: phase, health, heartbeat, escalation level, quarantine", runNodes},
		{"cluster-health", "show the cluster's health: leader, nodes, rolls, breaker (exit 1 when not healthy)", runClusterHealth},
		{"roll", "rolling restart under a disruption budget with live progress; roll status|pause|resume|abort ID", runRoll},
		{"quarantine", "quarantine a node: the coordinators stop restarting it", runQuarantine},
		{"release", "lift a node's quarantine and reset its escalation", runRelease},
		{"forget", "decommission a node that will not return (needs --yes)", runForget},
		{"breaker", "reset the circuit breaker (breaker reset)", runBreaker},
		{"history", "list the cluster's restarts (--node, --reason, --since, --limit)", runHistory},
		{"report", "the weekly performance analysis and SLO compliance (exit 1 when an SLO is missed)", runReport},
		{"alerts", "firing alerts and their deliveries; alerts silence|unsilence|test|config", runAlerts},
	}
}

// Where operator verbs write and how they reach NATS; tests replace them.
var (
	opsOut    io.Writer = os.Stdout
	opsErrOut io.Writer = os.Stderr
	opsDial             = func(ctx context.Context, cf *connFlags, name string) (*bus.Conn, error) {
		return cf.connect(ctx, name)
	}
)

// Default waits of the operator verbs (--timeout overrides them).
const (
	defaultQueryWait   = 10 * time.Second // health, status, prepare, backups, config
	defaultReconWait   = 15 * time.Second // reconnect.test pings every client for up to 1 s
	defaultBackupWait  = 70 * time.Second // the node allows a snapshot 60 s
	defaultTaskWait    = 30 * time.Second
	restartExtraWait   = 30 * time.Second // beyond the restart's own timeout
	restoreExtraWait   = 60 * time.Second // archive + diff + restart
	interruptedMessage = "interrupted while waiting for %s %s; the node goes on with it (see `restartcoord status %s`)"
)

// wait is how long a verb waits for its reply: --timeout, else def.
func (c *connFlags) wait(def time.Duration) time.Duration {
	if c.timeout > 0 {
		return c.timeout
	}
	return def
}

// opsFlags is the flag set every operator verb starts from: natscli's
// connection flags and --json.
type opsFlags struct {
	fs     *flag.FlagSet
	conn   connFlags
	asJSON *bool
}

func newOpsFlags(name, usage string) *opsFlags {
	o := &opsFlags{fs: newFlags(name, usage)}
	o.conn.register(o.fs)
	o.asJSON = o.fs.Bool("json", false, "print the raw reply JSON (indented) instead of the readable summary")
	return o
}

// set reports which flags the user gave.
func (o *opsFlags) set() map[string]bool {
	m := map[string]bool{}
	o.fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// dial connects for a verb (exit 3 when NATS cannot be reached).
func (o *opsFlags) dial(ctx context.Context, verb string) (*bus.Conn, error) {
	conn, err := opsDial(ctx, &o.conn, "restartcoord-"+verb)
	if err != nil {
		return nil, hint(err)
	}
	return conn, nil
}

// nodeCall sends body to the node control operation op of node and returns
// the reply body, waiting at most wait. With asJSON an error envelope is
// printed to stdout as well; the error returned carries the exit code
// classify gives it.
func nodeCall(ctx context.Context, conn *bus.Conn, node, op string, body any, wait time.Duration, asJSON bool) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	data, err := conn.Request(rctx, schema.NodeSubject(node, op), body, nil)
	if err != nil {
		var se *schema.Error
		if asJSON && errors.As(err, &se) && len(data) > 0 {
			_ = printRaw(data)
		}
		return nil, opError(ctx, node, op, err, wait)
	}
	return data, nil
}

// opError explains a failed request: a contract error with its details, a
// timeout with what goes on at the node, an interrupt, no node listening.
func opError(ctx context.Context, node, op string, err error, wait time.Duration) error {
	var se *schema.Error
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%s %s: %w%s", node, op, err, detailSuffix(se))
	case ctx.Err() != nil:
		return &exitError{code: exitNoNATS, err: fmt.Errorf(interruptedMessage, op, node, node)}
	case errors.Is(err, bus.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		msg := fmt.Sprintf("no reply from %s to %s within %s", node, op, wait)
		switch op {
		case schema.OpRestart, schema.OpStateRestore:
			msg += fmt.Sprintf("; leaving early does not cancel it: see `restartcoord status %s`", node)
		case schema.OpStateBackup:
			msg += fmt.Sprintf("; the snapshot may still be taken: see `restartcoord state backups %s`", node)
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	return hint(err)
}

// detailSuffix renders an error's details (other than the field, which the
// message names) as " (key: value, ...)".
func detailSuffix(e *schema.Error) string {
	var keys []string
	for k := range e.Details {
		if k != "field" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+detailValue(e.Details[k]))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

func detailValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = detailValue(e)
		}
		return strings.Join(s, ", ")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// printRaw prints a reply body as indented JSON.
func printRaw(data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		_, werr := fmt.Fprintf(opsOut, "%s\n", data)
		return werr
	}
	buf.WriteByte('\n')
	_, err := opsOut.Write(buf.Bytes())
	return err
}

// printJSON prints a value as indented JSON.
func printJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return printRaw(data)
}

// decodeReply decodes a reply body the node sent.
func decodeReply(node, op string, data []byte, out any) error {
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: cannot read the reply: %w", node, op, err)
	}
	return nil
}

// subverb is one verb of a group (state, config, task).
type subverb struct {
	name, help string
	run        func(ctx context.Context, args []string) error
}

// dispatch runs the sub-verb named among args (natscli style, flags may
// come first: `restartcoord task -s URL list node-1`).
func dispatch(ctx context.Context, group string, subs []subverb, args []string) error {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, s := range subs {
			if a == s.name {
				rest := append(append([]string{}, args[:i]...), args[i+1:]...)
				return s.run(ctx, rest)
			}
		}
	}
	for i, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprintf(opsOut, "usage: restartcoord %s <sub-verb> [flags] [args]\n\nsub-verbs:\n", group)
			for _, s := range subs {
				fmt.Fprintf(opsOut, "  %-9s %s\n", s.name, s.help)
			}
			fmt.Fprintf(opsOut, "\n`restartcoord %s <sub-verb> -h` lists its flags.\n", group)
			return &silentExit{code: exitOK}
		}
		if !strings.HasPrefix(a, "-") && (i == 0 || !flagTakesValue(args[i-1])) {
			return usageErr("unknown %s sub-verb %q (want %s)", group, a, subNames(subs))
		}
	}
	return usageErr("%s needs a sub-verb: %s (usage: restartcoord %s <sub-verb> [flags] [args])", group, subNames(subs), group)
}

// flagTakesValue reports whether a is a connection flag written without
// =value, whose value is the next argument.
func flagTakesValue(a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	switch strings.TrimLeft(a, "-") {
	case "s", "server", "creds", "user", "password", "timeout":
		return true
	}
	return false
}

func subNames(subs []subverb) string {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

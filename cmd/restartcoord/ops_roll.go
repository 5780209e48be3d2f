package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

const rollUsage = "restartcoord roll --group G | --nodes a,b [--max-unavailable 1] [--canary 0] [--min-healthy-time 5s] " +
	"[--healthy-deadline 60s] [--emergency] [--no-preserve-state] [--reason R] [--timeout-secs 30] [--config-version V] " +
	"[--roll-id ID] [--auto-resume=false] [--max-auto-resumes 3] [--dry-run] [--detach] [--json] [-s URL] [--timeout DURATION]\n" +
	"       restartcoord roll status|pause|resume|abort ROLL_ID [--follow] [--json] [-s URL] [--timeout DURATION]"

// Following a roll: how often its status is asked, how often the nodes'
// phases are, and how long the coordinators may stay silent before the
// CLI gives up (exit 3); tests shorten them.
var (
	rollPollEvery   = 250 * time.Millisecond
	rollPhasesEvery = time.Second
	rollLostAfter   = 30 * time.Second
)

// rollStartWait is how long a roll start is waited for: a coordinator
// holds a start sent during a leader election for up to 15 s
// (coordinator.Config.LeaderWait) before NOT_LEADER, and the CLI waits
// that out rather than giving up first.
const rollStartWait = 25 * time.Second

// stderrIsTerminal says whether progress may redraw a bar on stderr.
var stderrIsTerminal = func() bool {
	if opsErrOut != os.Stderr {
		return false
	}
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// rollSubverbs are the verbs on an existing roll.
func rollSubverbs() []subverb {
	return []subverb{
		{"status", "show a roll's progress (--follow follows it to its end)", rollStateVerb(schema.OpRollStatus)},
		{"pause", "pause a roll: nodes out finish, no new ones are taken", rollStateVerb(schema.OpRollPause)},
		{"resume", "resume a paused roll (its failed nodes are tried again)", rollStateVerb(schema.OpRollResume)},
		{"abort", "abort a roll: nodes out finish, no new ones are taken, it cannot be resumed", rollStateVerb(schema.OpRollAbort)},
	}
}

// rollValueFlags are the flags of roll that take a value (written without
// =value, the value is the next argument).
var rollValueFlags = []string{"group", "nodes", "max-unavailable", "canary", "min-healthy-time", "healthy-deadline",
	"reason", "timeout-secs", "config-version", "roll-id", "max-auto-resumes", "s", "server", "creds", "user", "password", "timeout"}

// runRoll starts a roll (or plans it with --dry-run), or runs a sub-verb on
// an existing roll: `roll status ID`.
func runRoll(ctx context.Context, args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") {
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && slices.Contains(rollValueFlags, name) {
				i++ // its value
			}
			continue
		}
		for _, s := range rollSubverbs() {
			if a == s.name {
				return s.run(ctx, append(append([]string{}, args[:i]...), args[i+1:]...))
			}
		}
		break // the first positional argument is no sub-verb: runRollStart refuses it
	}
	return runRollStart(ctx, args)
}

// secondsFlag is a duration flag that also takes a plain number of seconds.
type secondsFlag struct{ d time.Duration }

func (s *secondsFlag) String() string { return s.d.String() }

func (s *secondsFlag) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e6 {
			return fmt.Errorf("%q is out of range", v)
		}
		s.d = schema.Seconds(f)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration (want e.g. 5s, 1m, or seconds)", v)
	}
	s.d = d
	return nil
}

// rollFlags are roll's own flags.
type rollFlags struct {
	group, nodes, reason, configVersion, rollID string
	maxUnavailable, canary, maxAutoResumes      int
	minHealthy, healthyDeadline                 secondsFlag
	emergency, noPreserve, dryRun, detach       bool
	autoResume                                  bool
	timeoutSecs                                 float64
}

func (r *rollFlags) register(fs *flag.FlagSet) {
	def := schema.DefaultRollRequest()
	fs.StringVar(&r.group, "group", "", "roll every node of this group")
	fs.StringVar(&r.nodes, "nodes", "", "roll these nodes (comma-separated ids; with --group, those of the group)")
	fs.IntVar(&r.maxUnavailable, "max-unavailable", def.MaxUnavailable, "at most this many selected nodes out at once, counting unhealthy ones (1..1000)")
	fs.IntVar(&r.canary, "canary", def.Canary, "restart the first N nodes alone first; a canary that fails aborts the roll (0..1000)")
	r.minHealthy.d = schema.Seconds(def.MinHealthyTime)
	fs.Var(&r.minHealthy, "min-healthy-time", "how long a restarted node must stay healthy before the next is taken (0..1h; default 5s)")
	r.healthyDeadline.d = schema.Seconds(def.HealthyDeadline)
	fs.Var(&r.healthyDeadline, "healthy-deadline", "a node not healthy this long after its restart pauses the roll (1s..1h; default 1m0s)")
	fs.BoolVar(&r.emergency, "emergency", false, "emergency restarts: workers killed at once, no drain, no snapshot")
	fs.BoolVar(&r.noPreserve, "no-preserve-state", false, "skip writing snapshots (state is still restored from the journal)")
	fs.StringVar(&r.reason, "reason", string(def.Reason), "why: "+reasonList())
	fs.Float64Var(&r.timeoutSecs, "timeout-secs", def.Timeout,
		fmt.Sprintf("seconds the graceful part of each restart may take (%d..%d)", schema.MinRestartTimeout, schema.MaxRestartTimeout))
	fs.StringVar(&r.configVersion, "config-version", "", "roll to this configuration: each node restarts with configuration_update and must report this config_version")
	fs.StringVar(&r.rollID, "roll-id", "", "name the roll (1..64 letters, digits, '-', '_'): a start repeated with the same id returns that roll instead of making another")
	fs.BoolVar(&r.autoResume, "auto-resume", def.AutoResume, "resume by itself when paused for a failed node, once that node is healthy for --min-healthy-time (--auto-resume=false: an operator resumes)")
	fs.IntVar(&r.maxAutoResumes, "max-auto-resumes", def.MaxAutoResumes, "at most this many automatic resumes per roll (0..100)")
	fs.BoolVar(&r.dryRun, "dry-run", false, "print the plan (waves) and what would block it; start nothing (exit 1 when blocked)")
	fs.BoolVar(&r.detach, "detach", false, "start the roll and return at once with its id")
}

// rollRequest checks the flags as the coordinator would and builds the
// request.
func (r *rollFlags) rollRequest(set map[string]bool) (schema.RollRequest, error) {
	req := schema.DefaultRollRequest()
	if !set["group"] && !set["nodes"] {
		return req, usageErr("roll needs --group G or --nodes a,b (usage: %s)", rollUsage)
	}
	if set["group"] {
		if !schema.ValidToken(r.group) {
			return req, usageErr("--group %q: must be 1..64 letters, digits, '-' or '_'", r.group)
		}
		req.Selector.Group = r.group
	}
	if set["nodes"] {
		seen := map[string]bool{}
		for _, n := range strings.Split(r.nodes, ",") {
			n = strings.TrimSpace(n)
			if !schema.ValidToken(n) {
				return req, usageErr("--nodes: node id %q: must be 1..64 letters, digits, '-' or '_'", n)
			}
			if seen[n] {
				return req, usageErr("--nodes: %s is listed twice", n)
			}
			seen[n] = true
			req.Selector.Nodes = append(req.Selector.Nodes, n)
		}
	}
	if r.maxUnavailable < 1 || r.maxUnavailable > 1000 {
		return req, usageErr("--max-unavailable must be 1..1000, got %d", r.maxUnavailable)
	}
	req.MaxUnavailable = r.maxUnavailable
	if r.canary < 0 || r.canary > 1000 {
		return req, usageErr("--canary must be 0..1000, got %d", r.canary)
	}
	if len(req.Selector.Nodes) > 0 && r.canary > len(req.Selector.Nodes) {
		return req, usageErr("--canary %d is more than the %d nodes of --nodes", r.canary, len(req.Selector.Nodes))
	}
	req.Canary = r.canary
	if r.minHealthy.d < 0 || r.minHealthy.d > time.Hour {
		return req, usageErr("--min-healthy-time must be 0..1h, got %s", r.minHealthy.d)
	}
	req.MinHealthyTime = schema.Secs(r.minHealthy.d)
	if r.healthyDeadline.d < time.Second || r.healthyDeadline.d > time.Hour {
		return req, usageErr("--healthy-deadline must be 1s..1h, got %s", r.healthyDeadline.d)
	}
	req.HealthyDeadline = schema.Secs(r.healthyDeadline.d)
	req.Graceful = !r.emergency
	req.PreserveState = !r.noPreserve
	if !schema.Reason(r.reason).Valid() {
		return req, usageErr("--reason %q: want one of %s", r.reason, reasonList())
	}
	req.Reason = schema.Reason(r.reason)
	if math.IsNaN(r.timeoutSecs) || r.timeoutSecs < schema.MinRestartTimeout || r.timeoutSecs > schema.MaxRestartTimeout {
		return req, usageErr("--timeout-secs must be %d..%d seconds, got %v", schema.MinRestartTimeout, schema.MaxRestartTimeout, r.timeoutSecs)
	}
	req.Timeout = r.timeoutSecs
	if set["config-version"] {
		if r.configVersion == "" || len(r.configVersion) > 64 {
			return req, usageErr("--config-version must be 1..64 characters, got %q", r.configVersion)
		}
		if set["reason"] && req.Reason != schema.ReasonConfigurationUpdate {
			return req, usageErr("--config-version restarts every node with reason %s; it contradicts --reason %s",
				schema.ReasonConfigurationUpdate, req.Reason)
		}
		req.ConfigVersion = r.configVersion
	}
	if set["roll-id"] {
		if !schema.ValidToken(r.rollID) {
			return req, usageErr("--roll-id %q: must be 1..64 letters, digits, '-' or '_'", r.rollID)
		}
		req.RollID = r.rollID
	}
	if r.maxAutoResumes < 0 || r.maxAutoResumes > 100 {
		return req, usageErr("--max-auto-resumes must be 0..100, got %d", r.maxAutoResumes)
	}
	req.AutoResume, req.MaxAutoResumes = r.autoResume, r.maxAutoResumes
	if r.dryRun && r.detach {
		return req, usageErr("--dry-run starts nothing; it cannot be combined with --detach")
	}
	if err := req.Validate(); err != nil { // what the coordinator checks, in case the two drift apart
		return req, usageErr("%v", err)
	}
	return req, nil
}

// runRollStart plans or starts a roll and, unless --detach, follows it.
func runRollStart(ctx context.Context, args []string) error {
	o := newOpsFlags("roll", rollUsage)
	var rf rollFlags
	rf.register(o.fs)
	pos, err := parse(o.fs, args, rollUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected argument %q: roll takes --group or --nodes, or a sub-verb first (status, pause, resume, abort) (usage: %s)", pos[0], rollUsage)
	}
	req, err := rf.rollRequest(o.set())
	if err != nil {
		return err
	}

	conn, err := o.dial(ctx, "roll")
	if err != nil {
		return err
	}
	defer conn.Close()
	wait := o.conn.wait(defaultQueryWait)
	if rf.dryRun {
		data, err := clusterCall(ctx, conn, schema.ClusterSubject(schema.OpRollPlan), req, wait, *o.asJSON)
		if err != nil {
			return err
		}
		var p schema.RollPlan
		if err := decodeReply("cluster", schema.OpRollPlan, data, &p); err != nil {
			return err
		}
		if *o.asJSON {
			if err := printRaw(data); err != nil {
				return err
			}
		} else {
			renderPlan(opsOut, &req, &p)
		}
		if len(p.BlockedBy) > 0 {
			return &silentExit{code: exitFailed}
		}
		return nil
	}

	data, err := clusterCall(ctx, conn, schema.ClusterSubject(schema.OpRollStart), req, o.conn.wait(rollStartWait), *o.asJSON)
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: exitNoNATS, err: errors.New("interrupted while starting the roll; it may have started: see `restartcoord cluster-health` (active rolls)")}
		}
		return err
	}
	var st schema.RollStatus
	if err := decodeReply("cluster", schema.OpRollStart, data, &st); err != nil {
		return err
	}
	if rf.detach {
		if *o.asJSON {
			return printRaw(data)
		}
		renderRollStarted(opsOut, &st)
		return nil
	}
	if !*o.asJSON {
		renderRollStarted(opsOut, &st)
	}
	return followRoll(ctx, conn, &st, data, wait, *o.asJSON)
}

// rollStateVerb is `roll status|pause|resume|abort ROLL_ID`.
func rollStateVerb(op string) func(ctx context.Context, args []string) error {
	name := strings.TrimPrefix(op, "roll.")
	usage := "restartcoord roll " + name + " ROLL_ID [--json] [-s URL] [--timeout DURATION]"
	if op == schema.OpRollStatus {
		usage = "restartcoord roll status ROLL_ID [--follow] [--json] [-s URL] [--timeout DURATION]"
	}
	return func(ctx context.Context, args []string) error {
		o := newOpsFlags("roll "+name, usage)
		var follow *bool
		if op == schema.OpRollStatus {
			follow = o.fs.Bool("follow", false, "follow the roll to its end with a progress display, as `roll` does (exit as `roll` does)")
		}
		pos, err := parse(o.fs, args, usage)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageErr("expected one ROLL_ID argument, got %d (usage: %s)", len(pos), usage)
		}
		if !schema.ValidToken(pos[0]) {
			return usageErr("roll id %q: must be 1..64 letters, digits, '-' or '_'", pos[0])
		}
		conn, err := o.dial(ctx, "roll-"+name)
		if err != nil {
			return err
		}
		defer conn.Close()
		wait := o.conn.wait(defaultQueryWait)
		data, err := clusterCall(ctx, conn, schema.ClusterSubject(op), schema.RollIDRequest{RollID: pos[0]}, wait, *o.asJSON)
		if err != nil {
			return err
		}
		var st schema.RollStatus
		if err := decodeReply("cluster", op, data, &st); err != nil {
			return err
		}
		if follow != nil && *follow {
			if ended, _ := rollEnded(&st); !ended && !*o.asJSON {
				renderRollStatus(opsOut, &st)
			}
			return followRoll(ctx, conn, &st, data, wait, *o.asJSON)
		}
		if *o.asJSON {
			return printRaw(data)
		}
		renderRollStatus(opsOut, &st)
		return nil
	}
}

// --- following -------------------------------------------------------------------

// rollEnded reports whether following st is over, and the error its exit
// code comes from (nil: completed).
func rollEnded(st *schema.RollStatus) (bool, error) {
	switch st.State {
	case schema.RollCompleted:
		return true, nil
	case schema.RollFailed, schema.RollAborted:
		msg := fmt.Sprintf("roll %s %s, %d/%d node(s) restarted", st.RollID, st.State, st.Done, st.Total)
		if st.Message != "" {
			msg += ": " + st.Message
		}
		return true, &exitError{code: exitFailed, err: errors.New(msg)}
	case schema.RollPaused:
		// Paused by the coordinator (a node failed, or the roll is blocked):
		// an operator must act, unless it resumes by itself. Paused by an
		// operator: it will be resumed.
		if mayResumeItself(st) {
			return false, nil
		}
		if len(st.Failed) > 0 || st.Message != "" {
			return true, &exitError{code: exitFailed, err: fmt.Errorf("roll %s paused: %s (then `restartcoord roll resume %s`, or `restartcoord roll abort %s`)",
				st.RollID, orDash(st.Message), st.RollID, st.RollID)}
		}
	}
	return false, nil
}

// mayResumeItself: st is paused for a failed node and has automatic
// resumes left, so following it goes on.
func mayResumeItself(st *schema.RollStatus) bool {
	return st.State == schema.RollPaused && st.PausedReason == schema.PausedNodeFailed &&
		st.Request.AutoResume && st.AutoResumes < st.Request.MaxAutoResumes
}

// follower tracks what a followed roll's progress display shows.
type follower struct {
	st       *schema.RollStatus
	tty      bool
	start    time.Time
	lastLine string
	drawn    bool
	problem  string // why the last poll failed, shown until one succeeds

	mu     sync.Mutex
	events map[string]schema.PhaseEvent // node -> its last phase event in this roll
	phases map[string]schema.Phase      // node -> phase from cluster.nodes
}

// followRoll polls the roll's status until it ends, showing progress on
// stderr, then prints the summary. Ctrl-C stops following only.
func followRoll(ctx context.Context, conn *bus.Conn, st *schema.RollStatus, raw []byte, wait time.Duration, asJSON bool) error {
	f := &follower{st: st, tty: stderrIsTerminal(), start: time.Now(), events: map[string]schema.PhaseEvent{}, phases: map[string]schema.Phase{}}
	id := st.RollID
	if sub, err := conn.Subscribe(schema.NodeEventSubject("*", schema.EventPhase), func(m *nats.Msg) {
		var ev schema.PhaseEvent
		if json.Unmarshal(m.Data, &ev) != nil || !isRollRestart(ev.RestartID, id, ev.NodeID) {
			return
		}
		f.mu.Lock()
		f.events[ev.NodeID] = ev
		f.mu.Unlock()
	}); err == nil {
		defer func() { _ = sub.Unsubscribe() }()
	}
	var lastPhases time.Time
	var failingSince time.Time
	tick := time.NewTicker(rollPollEvery)
	defer tick.Stop()
	for {
		if done, err := rollEnded(f.st); done {
			f.clear()
			if asJSON {
				if perr := printRaw(raw); perr != nil {
					return perr
				}
			} else {
				renderRollSummary(opsOut, f.st, time.Now())
			}
			return err
		}
		if len(f.st.Current) > 0 && time.Since(lastPhases) >= rollPhasesEvery {
			lastPhases = time.Now()
			f.readPhases(ctx, conn, f.st.Request.Selector.Group)
		}
		f.show()
		select {
		case <-ctx.Done():
			f.clear()
			return &exitError{code: exitNoNATS, err: fmt.Errorf("stopped following roll %s; the roll goes on. See it with `restartcoord roll status %s` (add --follow to follow it again)", id, id)}
		case <-tick.C:
		}
		data, err := clusterCall(ctx, conn, schema.ClusterSubject(schema.OpRollStatus), schema.RollIDRequest{RollID: id}, wait, false)
		if err != nil {
			var se *schema.Error
			if ctx.Err() != nil {
				continue // the loop's top says how to follow again
			}
			if errors.As(err, &se) {
				f.clear()
				return err
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > rollLostAfter {
				f.clear()
				return &exitError{code: exitNoNATS, err: fmt.Errorf("lost the coordinators for %s while following roll %s (the roll goes on; see `restartcoord roll status %s`): %w",
					rollLostAfter, id, id, err)}
			}
			f.problem = "no answer from the coordinators: " + err.Error()
			continue
		}
		failingSince, f.problem = time.Time{}, ""
		var next schema.RollStatus
		if err := decodeReply("cluster", schema.OpRollStatus, data, &next); err != nil {
			f.clear()
			return err
		}
		f.st, raw = &next, data
	}
}

// isRollRestart: restartID is a try of roll's restart of node (its first,
// roll-node, or a retry after a failure, roll-node-retryN).
func isRollRestart(restartID, roll, node string) bool {
	first := roll + "-" + node
	if restartID == first {
		return true
	}
	n, ok := strings.CutPrefix(restartID, first+"-retry")
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

// readPhases asks cluster.nodes for the phases of the nodes out (the
// fallback when their phase events are not seen).
func (f *follower) readPhases(ctx context.Context, conn *bus.Conn, group string) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var l schema.NodeList
	if conn.RequestJSON(rctx, schema.ClusterSubject(schema.OpClusterNodes), schema.NodesRequest{Group: group}, nil, &l) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range l.Nodes {
		f.phases[n.NodeID] = n.Phase
	}
}

// nodePhase is what a node out in the roll is doing.
func (f *follower) nodePhase(n schema.RollNode, at time.Time) string {
	f.mu.Lock()
	ev, haveEv := f.events[n.NodeID]
	ph := f.phases[n.NodeID]
	f.mu.Unlock()
	switch {
	case n.HealthyAt != nil:
		return "healthy " + fmtSecs(at.Sub(*n.HealthyAt).Seconds()) + " of " + fmtSecs(f.st.Request.MinHealthyTime)
	case haveEv && (n.StartedAt == nil || !ev.Timestamp.Before(n.StartedAt.Add(-time.Second))):
		return string(ev.Phase)
	case ph != "":
		return string(ph)
	}
	return "starting"
}

// show draws the progress: a redrawn bar on a terminal, else a line when
// something changed.
func (f *follower) show() {
	at := time.Now()
	st := f.st
	var cur []string
	for _, n := range st.Nodes {
		if slices.Contains(st.Current, n.NodeID) {
			s := n.NodeID + ": " + f.nodePhase(n, at)
			if n.StartedAt != nil && n.HealthyAt == nil {
				s += " (" + fmtSecs(at.Sub(*n.StartedAt).Seconds()) + ")"
			}
			cur = append(cur, s)
		}
	}
	if f.tty {
		line := rollBar(st, cur, at.Sub(st.StartedAt), at, f.problem)
		if width := termWidth(); len(line) > width-1 {
			line = line[:width-1]
		}
		fmt.Fprintf(opsErrOut, "\r\033[K%s", line)
		f.drawn = true
		return
	}
	// Without a terminal: only changes, without the ticking seconds.
	var curNoTime []string
	for _, n := range st.Nodes {
		if slices.Contains(st.Current, n.NodeID) {
			curNoTime = append(curNoTime, n.NodeID+" ("+f.nodePhaseCoarse(n)+")")
		}
	}
	line := rollLine(st, curNoTime, f.problem)
	if line == f.lastLine {
		return
	}
	f.lastLine = line
	fmt.Fprintf(opsErrOut, "[%s] %s\n", fmtSecs(at.Sub(f.start).Seconds()), line)
}

// nodePhaseCoarse is nodePhase without the healthy clock (it changes every
// tick).
func (f *follower) nodePhaseCoarse(n schema.RollNode) string {
	if n.HealthyAt != nil {
		return "healthy, waiting " + fmtSecs(f.st.Request.MinHealthyTime)
	}
	return f.nodePhase(n, time.Now())
}

// clear removes the bar from the terminal.
func (f *follower) clear() {
	if f.tty && f.drawn {
		fmt.Fprint(opsErrOut, "\r\033[K")
		f.drawn = false
	}
}

// termWidth is $COLUMNS, else 120.
func termWidth() int {
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n >= 40 {
		return n
	}
	return 120
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

func TestClusterBadUsageIsRefusedLocally(t *testing.T) {
	cases := []struct {
		name string
		args []string
	}{
		{"nodes bad group", []string{"nodes", "--group", "a.b"}},
		{"nodes extra argument", []string{"nodes", "node-1"}},
		{"cluster-health extra argument", []string{"cluster-health", "x"}},
		{"cluster-health unknown flag", []string{"cluster-health", "--group", "g"}},
		{"roll without selector", []string{"roll"}},
		{"roll bad group", []string{"roll", "--group", "a b"}},
		{"roll bad node in list", []string{"roll", "--nodes", "node-1,node.2"}},
		{"roll empty node in list", []string{"roll", "--nodes", "node-1,,node-2"}},
		{"roll node listed twice", []string{"roll", "--nodes", "node-1,node-1"}},
		{"roll max-unavailable zero", []string{"roll", "--group", "g", "--max-unavailable", "0"}},
		{"roll max-unavailable too high", []string{"roll", "--group", "g", "--max-unavailable", "1001"}},
		{"roll canary negative", []string{"roll", "--group", "g", "--canary", "-1"}},
		{"roll canary more than nodes", []string{"roll", "--nodes", "a,b", "--canary", "3"}},
		{"roll min-healthy-time negative", []string{"roll", "--group", "g", "--min-healthy-time", "-1s"}},
		{"roll min-healthy-time too long", []string{"roll", "--group", "g", "--min-healthy-time", "2h"}},
		{"roll min-healthy-time not a duration", []string{"roll", "--group", "g", "--min-healthy-time", "soon"}},
		{"roll healthy-deadline zero", []string{"roll", "--group", "g", "--healthy-deadline", "0s"}},
		{"roll healthy-deadline NaN", []string{"roll", "--group", "g", "--healthy-deadline", "NaN"}},
		{"roll bad reason", []string{"roll", "--group", "g", "--reason", "because"}},
		{"roll timeout-secs too low", []string{"roll", "--group", "g", "--timeout-secs", "5"}},
		{"roll timeout-secs NaN", []string{"roll", "--group", "g", "--timeout-secs", "NaN"}},
		{"roll config-version too long", []string{"roll", "--group", "g", "--config-version", strings.Repeat("v", 65)}},
		{"roll config-version empty", []string{"roll", "--group", "g", "--config-version="}},
		{"roll config-version with other reason", []string{"roll", "--group", "g", "--config-version", "v2", "--reason", "manual_request"}},
		{"roll dry-run and detach", []string{"roll", "--group", "g", "--dry-run", "--detach"}},
		{"roll bad roll-id", []string{"roll", "--group", "g", "--roll-id", "my.roll"}},
		{"roll roll-id too long", []string{"roll", "--group", "g", "--roll-id", strings.Repeat("r", 65)}},
		{"roll max-auto-resumes negative", []string{"roll", "--group", "g", "--max-auto-resumes", "-1"}},
		{"roll max-auto-resumes too high", []string{"roll", "--group", "g", "--max-auto-resumes", "101"}},
		{"roll positional argument", []string{"roll", "--group", "g", "node-1"}},
		{"roll unknown sub-verb", []string{"roll", "restart", "roll-1"}},
		{"roll unknown flag", []string{"roll", "--group", "g", "--force"}},
		{"roll status without id", []string{"roll", "status"}},
		{"roll status bad id", []string{"roll", "status", "roll.1"}},
		{"roll pause two ids", []string{"roll", "pause", "r1", "r2"}},
		{"roll abort bad flag", []string{"roll", "abort", "r1", "--follow"}},
		{"quarantine missing node", []string{"quarantine"}},
		{"quarantine bad node", []string{"quarantine", "node*"}},
		{"release two nodes", []string{"release", "a", "b"}},
		{"forget without --yes", []string{"forget", "node-1"}},
		{"forget bad node", []string{"forget", "a.b", "--yes"}},
		{"breaker without sub-verb", []string{"breaker"}},
		{"breaker unknown sub-verb", []string{"breaker", "open"}},
		{"breaker reset extra argument", []string{"breaker", "reset", "now"}},
		{"history bad node", []string{"history", "--node", "a.b"}},
		{"history bad reason", []string{"history", "--reason", "why"}},
		{"history bad since", []string{"history", "--since", "yesterday"}},
		{"history since zero", []string{"history", "--since", "0s"}},
		{"history since negative", []string{"history", "--since", "-1h"}},
		{"history limit zero", []string{"history", "--limit", "0"}},
		{"history limit too high", []string{"history", "--limit", "10001"}},
		{"report bad window", []string{"report", "--window", "7x"}},
		{"report window unitless", []string{"report", "--window", "604800"}},
		{"report window too short", []string{"report", "--window", "30s"}},
		{"report window too long", []string{"report", "--window", "367d"}},
		{"alerts extra argument", []string{"alerts", "list", "now"}},
		{"alerts unknown sub-verb", []string{"alerts", "mute"}},
		{"alerts silence without kind", []string{"alerts", "silence", "--for", "2h", "--reason", "r"}},
		{"alerts silence unknown kind", []string{"alerts", "silence", "--kind", "oops", "--for", "2h", "--reason", "r"}},
		{"alerts silence without reason", []string{"alerts", "silence", "--kind", "slow_restart", "--for", "2h"}},
		{"alerts silence too long", []string{"alerts", "silence", "--kind", "slow_restart", "--for", "31d", "--reason", "r"}},
		{"alerts silence bad node", []string{"alerts", "silence", "--kind", "slow_restart", "--node", "a.b", "--for", "1h", "--reason", "r"}},
		{"alerts unsilence without id", []string{"alerts", "unsilence"}},
		{"alerts unsilence bad id", []string{"alerts", "unsilence", "a.b"}},
		{"alerts test without receiver", []string{"alerts", "test"}},
		{"alerts config set missing file", []string{"alerts", "config", "set", "/nonexistent/alerts.yaml"}},
		{"alerts config set invalid file", []string{"alerts", "config", "set", invalidAlertsFile}},
		{"alerts config without sub-verb", []string{"alerts", "config"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dials := fakeDial(t)
			capture(t)
			if got := run(context.Background(), tc.args); got != exitUsage {
				t.Errorf("exit code: got %d, want %d", got, exitUsage)
			}
			if *dials != 0 {
				t.Errorf("connected to NATS %d times, want 0 (nothing may be sent)", *dials)
			}
		})
	}
}

func TestClusterValidUsageConnects(t *testing.T) {
	cases := [][]string{
		{"nodes"},
		{"nodes", "--group", "default", "--json"},
		{"cluster-health"},
		{"roll", "--group", "default"},
		{"roll", "--nodes", "node-1,node-2", "--canary", "1", "--max-unavailable", "2", "--min-healthy-time", "1s",
			"--healthy-deadline", "90", "--emergency", "--no-preserve-state", "--reason", "dr_test", "--timeout-secs", "10", "--detach"},
		{"roll", "--group", "default", "--config-version", "v2", "--dry-run", "--json"},
		{"roll", "--group", "default", "--min-healthy-time", "0"},
		{"roll", "--group", "default", "--roll-id", "my-roll-1", "--auto-resume=false", "--max-auto-resumes", "0"},
		{"roll", "--roll-id", "status", "--group", "default"}, // a roll id named like a sub-verb
		{"roll", "-s", "nats://127.0.0.1:1", "status", "roll-1"},
		{"roll", "--group", "status", "--dry-run"}, // a group named like a sub-verb
		{"roll", "status", "roll-1", "--follow"},
		{"roll", "pause", "roll-1"},
		{"roll", "resume", "roll-1", "--json"},
		{"roll", "abort", "roll-1"},
		{"quarantine", "node-1"},
		{"release", "node-1"},
		{"forget", "node-1", "--yes"},
		{"breaker", "reset"},
		{"history"},
		{"history", "--node", "node-1", "--reason", "rolling_restart", "--since", "7d", "--limit", "5"},
		{"report"},
		{"report", "--window", "24h"},
		{"report", "--window", "90m"},
		{"alerts"},
		{"alerts", "--json"},
		{"alerts", "-s", "nats://127.0.0.1:1"},
		{"alerts", "list"},
		{"alerts", "silence", "--kind", "slow_restart", "--node", "node-1", "--for", "2h", "--reason", "migration"},
		{"alerts", "unsilence", "sil-1234abcd"},
		{"alerts", "test", "pagerduty"},
		{"alerts", "config", "get"},
		{"alerts", "config", "set", validAlertsFile},
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dials := fakeDial(t)
			capture(t)
			if got := run(context.Background(), args); got != exitNoNATS {
				t.Errorf("exit code: got %d, want %d", got, exitNoNATS)
			}
			if *dials != 1 {
				t.Errorf("connected %d times, want 1", *dials)
			}
		})
	}
}

func TestClusterHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"roll", "-h"}, {"roll", "status", "-h"}, {"nodes", "--help"}, {"report", "-h"}, {"breaker", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dials := fakeDial(t)
			capture(t)
			if got := run(context.Background(), args); got != exitOK {
				t.Errorf("exit code: got %d, want 0", got)
			}
			if *dials != 0 {
				t.Errorf("connected %d times, want 0", *dials)
			}
		})
	}
}

func TestParseSpan(t *testing.T) {
	good := map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "1d": 24 * time.Hour, "1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour,
		"24h": 24 * time.Hour, "90m": 90 * time.Minute, "30s": 30 * time.Second, "1h30m": 90 * time.Minute, " 7d ": 7 * 24 * time.Hour,
	}
	for in, want := range good {
		got, err := parseSpan(in)
		if err != nil || got != want {
			t.Errorf("parseSpan(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0d", "7", "d", "7dd", "-7d", "-1h", "7days", "1d-1h", "abc", "1w", "+1h", "1e400d"} {
		if d, err := parseSpan(in); err == nil {
			t.Errorf("parseSpan(%q) = %v, want an error", in, d)
		}
	}
}

func TestRollRequestFromFlags(t *testing.T) {
	o := newOpsFlags("roll", rollUsage)
	var rf rollFlags
	rf.register(o.fs)
	if err := o.fs.Parse([]string{"--nodes", "node-2, node-1", "--canary", "1", "--max-unavailable", "2", "--min-healthy-time", "1.5",
		"--healthy-deadline", "2m", "--emergency", "--no-preserve-state", "--timeout-secs", "45", "--config-version", "v9",
		"--roll-id", "my-roll-1", "--auto-resume=false", "--max-auto-resumes", "7"}); err != nil {
		t.Fatal(err)
	}
	req, err := rf.rollRequest(o.set())
	if err != nil {
		t.Fatal(err)
	}
	want := schema.RollRequest{Selector: schema.Selector{Nodes: []string{"node-2", "node-1"}}, MaxUnavailable: 2, Canary: 1,
		MinHealthyTime: 1.5, HealthyDeadline: 120, Graceful: false, PreserveState: false, Reason: schema.ReasonRollingRestart,
		Timeout: 45, ConfigVersion: "v9", RollID: "my-roll-1", AutoResume: false, MaxAutoResumes: 7}
	got, _ := json.Marshal(req)
	exp, _ := json.Marshal(want)
	if !bytes.Equal(got, exp) {
		t.Errorf("request:\n got %s\nwant %s", got, exp)
	}

	// Defaults: the contract's.
	o = newOpsFlags("roll", rollUsage)
	rf = rollFlags{}
	rf.register(o.fs)
	if err := o.fs.Parse([]string{"--group", "default"}); err != nil {
		t.Fatal(err)
	}
	if req, err = rf.rollRequest(o.set()); err != nil {
		t.Fatal(err)
	}
	def := schema.DefaultRollRequest()
	def.Selector.Group = "default"
	got, _ = json.Marshal(req)
	exp, _ = json.Marshal(def)
	if !bytes.Equal(got, exp) {
		t.Errorf("default request:\n got %s\nwant %s", got, exp)
	}
}

func TestHistoryBody(t *testing.T) {
	at := time.Date(2025, 1, 8, 12, 0, 0, 0, time.UTC)
	req, err := historyBody(map[string]bool{"node": true, "reason": true}, "node-1", "manual_request", "7d", 5, at)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(req)
	want := `{"node_id":"node-1","reason":"manual_request","since":"2025-01-01T12:00:00Z","limit":5}`
	if string(data) != want {
		t.Errorf("body: got %s, want %s", data, want)
	}
}

const sampleNodes = `{"type":"io.restartcoord.v1.node_list","nodes":[
 {"node_id":"node-2","group":"default","priority":1,"phase":"stopping","healthy":false,"answering":true,"failed":false,
  "last_heartbeat":"2025-01-01T09:59:58Z","version":"0.1.0","worker_pid":0,"escalation_level":2,"degraded":true,"quarantined":false,"failures":3},
 {"node_id":"node-1","group":"default","priority":0,"phase":"idle","healthy":true,"answering":true,"failed":false,
  "last_heartbeat":"2025-01-01T09:59:59.5Z","version":"0.1.0","worker_pid":42,"escalation_level":0,"degraded":false,"quarantined":false,"failures":0},
 {"node_id":"node-3","group":"edge","priority":0,"phase":"idle","healthy":false,"answering":false,"failed":true,
  "last_heartbeat":null,"version":"0.1.0","worker_pid":0,"escalation_level":3,"degraded":true,"quarantined":true,"failures":6}]}`

func fixNow(t *testing.T, at time.Time) {
	t.Helper()
	now = func() time.Time { return at }
	t.Cleanup(func() { now = time.Now })
}

func TestRenderNodes(t *testing.T) {
	fixNow(t, time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC))
	var l schema.NodeList
	if err := json.Unmarshal([]byte(sampleNodes), &l); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	renderNodes(&buf, &l, "")
	out := buf.String()
	for _, want := range []string{"3 node(s), 1 healthy", "NODE", "PRIORITY", "HEARTBEAT", "LEVEL",
		"0.50s ago", "2.00s ago", "never", "degraded, 3 failed attempt(s)", "quarantined, degraded, failed, 6 failed attempt(s)", "stopping"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Roll order: group, then priority.
	if i1, i2, i3 := strings.Index(out, "node-1"), strings.Index(out, "node-2"), strings.Index(out, "node-3"); !(i1 < i2 && i2 < i3) {
		t.Errorf("nodes not in group/priority order:\n%s", out)
	}
}

func TestRenderClusterHealth(t *testing.T) {
	fixNow(t, time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC))
	h := schema.ClusterHealth{Leader: "coord-a", Term: 7, NodesTotal: 4, NodesHealthy: 3, NodesByPhase: map[string]int{"idle": 3, "stopping": 1},
		ActiveRolls: 1, CircuitBreaker: schema.BreakerState{Open: true, Reason: "3 nodes failed in 10m"}, RestartCount24h: 12}
	var buf bytes.Buffer
	renderClusterHealth(&buf, &h)
	out := buf.String()
	for _, want := range []string{"healthy: no", "coord-a (term 7)", "3/4", "idle 3, stopping 1", "active rolls:", "OPEN: 3 nodes failed in 10m",
		"breaker reset", "restarts in 24h:", "12", "never"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

const sampleRollStatus = `{"type":"io.restartcoord.v1.roll_status","roll_id":"roll-1a2b","state":"paused","done":2,"total":4,
 "current":["node-3"],"failed":["node-4"],"started_at":"2025-01-01T09:59:00Z","eta":null,
 "plan":{"waves":[["node-1"],["node-2"],["node-3"],["node-4"]]},
 "message":"paused: node-4 restart failed: PROCESS_FAILED: worker never healthy; the escalation ladder takes it over",
 "nodes":[{"node_id":"node-1","phase":"complete","duration":0.61},{"node_id":"node-2","phase":"complete","duration":1.25},
          {"node_id":"node-3","started_at":"2025-01-01T09:59:50Z"},
          {"node_id":"node-4","phase":"failed","error":"restart failed: PROCESS_FAILED: worker never healthy"}],
 "request":{"selector":{"group":"default"},"max_unavailable":1,"canary":1,"min_healthy_time":5,"healthy_deadline":60,
            "graceful":true,"preserve_state":true,"reason":"rolling_restart","timeout":30,"auto_resume":true,"max_auto_resumes":3},"term":3,
 "paused_reason":"node_failed","paused_since":"2025-01-01T09:59:55Z","auto_resumes":3}`

func TestRenderRollStatus(t *testing.T) {
	fixNow(t, time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC))
	var st schema.RollStatus
	if err := json.Unmarshal([]byte(sampleRollStatus), &st); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	renderRollStatus(&buf, &st)
	out := buf.String()
	for _, want := range []string{"roll roll-1a2b: paused, 2/4 done", "group default", "max_unavailable 1, canary 1", "1 (node-3)", "1 (node-4)",
		"worker never healthy", "0.61s", "1.25s", "restarted", "in progress", "10.0s", "FAILED: restart failed", "roll resume roll-1a2b",
		"node_failed since", "waits for an operator's resume", "3 of 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	buf.Reset()
	renderRollSummary(&buf, &st, time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC))
	if out := buf.String(); !strings.Contains(out, "roll roll-1a2b paused: 2/4 node(s) restarted in 1m0s") {
		t.Errorf("summary:\n%s", out)
	}
	ended, err := rollEnded(&st)
	if !ended || classifyExit(err) != exitFailed || !strings.Contains(err.Error(), "roll resume roll-1a2b") {
		t.Errorf("paused with failures: ended %v, err %v; want ended with exit 1", ended, err)
	}

	line := rollBar(&st, []string{"node-3 stopping 10.0s"}, 61*time.Second, now(), "")
	for _, want := range []string{"[##########..........] 2/4", "PAUSED", "node-3 stopping", "failed: node-4", "elapsed 1m1s", "ETA -"} {
		if !strings.Contains(line, want) {
			t.Errorf("bar lacks %q: %s", want, line)
		}
	}
}

func TestRollEnded(t *testing.T) {
	cases := []struct {
		st    schema.RollStatus
		ended bool
		code  int
	}{
		{schema.RollStatus{State: schema.RollRunning}, false, 0},
		{schema.RollStatus{State: schema.RollPaused}, false, 0}, // by an operator: it will be resumed
		{schema.RollStatus{State: schema.RollPaused, Message: "paused: blocked by [node-3]"}, true, exitFailed},
		{schema.RollStatus{State: schema.RollCompleted}, true, exitOK},
		{schema.RollStatus{State: schema.RollFailed, Message: "canary node-1 failed"}, true, exitFailed},
		{schema.RollStatus{State: schema.RollAborted}, true, exitFailed},
		// Paused for a failed node with automatic resumes left: it may go on by itself.
		{schema.RollStatus{State: schema.RollPaused, PausedReason: schema.PausedNodeFailed, Failed: []string{"node-2"}, Message: "paused: node-2",
			Request: schema.RollRequest{AutoResume: true, MaxAutoResumes: 3}, AutoResumes: 2}, false, 0},
		{schema.RollStatus{State: schema.RollPaused, PausedReason: schema.PausedNodeFailed, Failed: []string{"node-2"}, Message: "paused: node-2",
			Request: schema.RollRequest{AutoResume: true, MaxAutoResumes: 3}, AutoResumes: 3}, true, exitFailed},
		{schema.RollStatus{State: schema.RollPaused, PausedReason: schema.PausedNodeFailed, Failed: []string{"node-2"}, Message: "paused: node-2",
			Request: schema.RollRequest{AutoResume: false, MaxAutoResumes: 3}}, true, exitFailed},
		{schema.RollStatus{State: schema.RollPaused, PausedReason: schema.PausedBreaker, Message: "paused: circuit breaker open",
			Request: schema.RollRequest{AutoResume: true, MaxAutoResumes: 3}}, true, exitFailed},
	}
	for _, tc := range cases {
		ended, err := rollEnded(&tc.st)
		code := exitOK
		if err != nil {
			code = classifyExit(err)
		}
		if ended != tc.ended || code != tc.code {
			t.Errorf("%s %q: ended %v exit %d; want %v, %d", tc.st.State, tc.st.Message, ended, code, tc.ended, tc.code)
		}
	}
}

func TestRenderPlan(t *testing.T) {
	req := schema.DefaultRollRequest()
	req.Selector.Group, req.Canary = "default", 1
	p := schema.RollPlan{Plan: schema.PlanWaves{Waves: [][]string{{"node-1"}, {"node-2", "node-3"}}}, BlockedBy: []string{"node-4 is unhealthy"}, Skipped: []string{"node-5"}}
	var buf bytes.Buffer
	renderPlan(&buf, &req, &p)
	out := buf.String()
	for _, want := range []string{"3 node(s) in 2 wave(s); BLOCKED", "wave 1 (canary):", "node-2, node-3", "node-5 (quarantined)", "node-4 is unhealthy"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderReport(t *testing.T) {
	to := time.Date(2025, 1, 8, 0, 0, 0, 0, time.UTC)
	results := []schema.RestartResult{
		{NodeID: "node-1", Reason: schema.ReasonRollingRestart, Graceful: true, Success: true, Duration: 0.5, CompletedAt: to.Add(-time.Hour),
			State: schema.StateSummary{Preserved: true, TasksSaved: 3, TasksRestored: 3}},
		{NodeID: "node-2", Reason: schema.ReasonRollingRestart, Graceful: true, Success: true, Duration: 1.5, CompletedAt: to.Add(-time.Hour),
			State: schema.StateSummary{Preserved: true, TasksSaved: 3, TasksRestored: 3}},
		{NodeID: "node-3", Reason: schema.ReasonManualRequest, Graceful: false, Success: false, Duration: 40, CompletedAt: to.Add(-time.Hour),
			Error: &schema.Error{Code: schema.CodeProcessFailed, Message: "x"}},
	}
	rep := coordinator.BuildReport(results, to.Add(-7*24*time.Hour), to)
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var r coordinator.Report // as the CLI gets it
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	renderReport(&buf, &r)
	out := buf.String()
	for _, want := range []string{"2025-01-01T00:00:00Z to 2025-01-08T00:00:00Z (7d)", "total restarts:", "3", "66.67%", "14.0s", "40.0s",
		"100.00%", "42.0s", "manual_request 1, rolling_restart 2", "PROCESS_FAILED 1", "SLO compliance: 4/5 met",
		">= 99.5%", "<= 30s average", ">= 100% of graceful restarts", "<= 70s in the period", "PASS", "FAIL"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if sloMet(&r) {
		t.Error("sloMet: true with failed SLOs")
	}
	for k := range r.SLOCompliance {
		r.SLOCompliance[k] = true
	}
	if !sloMet(&r) {
		t.Error("sloMet: false with every SLO met")
	}
}

// --- against a NATS server that answers as a test says -------------------------

// fakeCoordinator starts an embedded NATS server and points the verbs at it.
func fakeCoordinator(t *testing.T) (*nats.Conn, string) {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, srv.URL()
}

// ready makes sure the server has every subscription of nc before a verb
// sends to it.
func ready(t *testing.T, nc *nats.Conn) {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// respondError answers as a micro service does with a contract error.
func respondError(m *nats.Msg, e *schema.Error) {
	body, _ := json.Marshal(schema.NewEnvelope(e))
	reply := nats.NewMsg(m.Reply)
	reply.Data = body
	reply.Header.Set("Nats-Service-Error", e.Message)
	reply.Header.Set("Nats-Service-Error-Code", "503")
	_ = m.RespondMsg(reply)
}

func shortNotLeader(t *testing.T, d time.Duration) {
	t.Helper()
	oldFor, oldBack := notLeaderFor, notLeaderBackoff
	notLeaderFor, notLeaderBackoff = d, 10*time.Millisecond
	t.Cleanup(func() { notLeaderFor, notLeaderBackoff = oldFor, oldBack })
}

func TestNotLeaderIsRetried(t *testing.T) {
	shortNotLeader(t, 5*time.Second)
	nc, url := fakeCoordinator(t)
	var calls atomic.Int32
	var bodies sync.Map
	_, err := nc.Subscribe(schema.ClusterSubject(schema.OpRollPause), func(m *nats.Msg) {
		n := calls.Add(1)
		bodies.Store(n, string(m.Data))
		if n <= 2 {
			respondError(m, schema.Errorf(schema.CodeNotLeader, "coordinator c2 is not the leader (leader: \"\")").WithDetail("leader", ""))
			return
		}
		_ = m.Respond([]byte(sampleRollStatus))
	})
	if err != nil {
		t.Fatal(err)
	}
	ready(t, nc)
	out := capture(t)
	if got := run(context.Background(), []string{"roll", "pause", "roll-1a2b", "-s", url}); got != exitOK {
		t.Fatalf("exit code: got %d, want 0", got)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("requests: got %d, want 3 (two NOT_LEADER, then the answer)", n)
	}
	if b, _ := bodies.Load(int32(3)); b != `{"roll_id":"roll-1a2b"}` {
		t.Errorf("body: got %v", b)
	}
	if !strings.Contains(out.String(), "roll roll-1a2b: paused, 2/4 done") {
		t.Errorf("output:\n%s", out)
	}
}

func TestNotLeaderGivesUp(t *testing.T) {
	shortNotLeader(t, 300*time.Millisecond)
	nc, url := fakeCoordinator(t)
	var calls atomic.Int32
	if _, err := nc.Subscribe(schema.ClusterNodeSubject("node-1", "quarantine"), func(m *nats.Msg) {
		calls.Add(1)
		respondError(m, schema.Errorf(schema.CodeNotLeader, "no leader").WithDetail("leader", ""))
	}); err != nil {
		t.Fatal(err)
	}
	ready(t, nc)
	capture(t)
	start := time.Now()
	if got := run(context.Background(), []string{"quarantine", "node-1", "-s", url}); got != exitNoNATS {
		t.Errorf("exit code: got %d, want 3", got)
	}
	if n := calls.Load(); n < 3 {
		t.Errorf("requests: got %d, want several tries", n)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("gave up after %s, want about 300ms", took)
	}
}

// A refusal other than NOT_LEADER is not retried and exits 2.
func TestClusterRefusalIsNotRetried(t *testing.T) {
	nc, url := fakeCoordinator(t)
	var calls atomic.Int32
	if _, err := nc.Subscribe(schema.ClusterNodeSubject("node-9", "release"), func(m *nats.Msg) {
		calls.Add(1)
		respondError(m, schema.Errorf(schema.CodeNotFound, "no node node-9"))
	}); err != nil {
		t.Fatal(err)
	}
	ready(t, nc)
	capture(t)
	if got := run(context.Background(), []string{"release", "node-9", "-s", url}); got != exitUsage {
		t.Errorf("exit code: got %d, want 2", got)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("requests: got %d, want 1", n)
	}
}

// rollScript answers roll.start and then roll.status with the statuses
// given, one a poll (the last one again once they run out).
func rollScript(t *testing.T, nc *nats.Conn, statuses ...schema.RollStatus) *atomic.Int32 {
	t.Helper()
	var polls atomic.Int32
	answer := func(m *nats.Msg, st schema.RollStatus) {
		st.Type = schema.TypeRollStatus
		data, _ := json.Marshal(st)
		_ = m.Respond(data)
	}
	if _, err := nc.Subscribe(schema.ClusterSubject(schema.OpRollStart), func(m *nats.Msg) {
		var req schema.RollRequest
		if err := json.Unmarshal(m.Data, &req); err != nil || req.Selector.Group != "default" || req.MinHealthyTime != 1 {
			respondError(m, schema.Invalid("selector", "unexpected request %s", m.Data))
			return
		}
		answer(m, statuses[0])
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(schema.ClusterSubject(schema.OpRollStatus), func(m *nats.Msg) {
		n := int(polls.Add(1))
		answer(m, statuses[min(n, len(statuses)-1)])
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(schema.ClusterSubject(schema.OpClusterNodes), func(m *nats.Msg) {
		_ = m.Respond([]byte(sampleNodes))
	}); err != nil {
		t.Fatal(err)
	}
	return &polls
}

func fastFollow(t *testing.T) *bytes.Buffer {
	t.Helper()
	oldPoll, oldPhases := rollPollEvery, rollPhasesEvery
	rollPollEvery, rollPhasesEvery = 10*time.Millisecond, 10*time.Millisecond
	var errBuf bytes.Buffer
	oldErr := opsErrOut
	opsErrOut = &syncWriter{w: &errBuf}
	t.Cleanup(func() { rollPollEvery, rollPhasesEvery, opsErrOut = oldPoll, oldPhases, oldErr })
	return &errBuf
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func sampleRoll(state string, done int, current, failed []string, msg string) schema.RollStatus {
	started := time.Now().Add(-3 * time.Second).UTC()
	st := schema.RollStatus{RollID: "roll-x1", State: state, Done: done, Total: 2, Current: current, Failed: failed, Message: msg,
		StartedAt: started, Plan: schema.PlanWaves{Waves: [][]string{{"node-1"}, {"node-2"}}},
		Request: schema.RollRequest{Selector: schema.Selector{Group: "default"}, MaxUnavailable: 1, MinHealthyTime: 1}}
	ids := []string{"node-1", "node-2"}
	for _, id := range ids[:done] {
		st.Nodes = append(st.Nodes, schema.RollNode{NodeID: id, Phase: schema.PhaseComplete, Duration: 0.75})
	}
	for _, id := range current {
		st.Nodes = append(st.Nodes, schema.RollNode{NodeID: id, StartedAt: &started})
	}
	for _, id := range failed {
		st.Nodes = append(st.Nodes, schema.RollNode{NodeID: id, Phase: schema.PhaseFailed, Error: "restart failed: boom"})
	}
	return st
}

func TestRollFollowsToCompletion(t *testing.T) {
	nc, url := fakeCoordinator(t)
	errOut := fastFollow(t)
	polls := rollScript(t, nc,
		sampleRoll(schema.RollRunning, 0, []string{"node-1"}, nil, ""),
		sampleRoll(schema.RollRunning, 0, []string{"node-1"}, nil, ""),
		sampleRoll(schema.RollRunning, 1, []string{"node-2"}, nil, ""),
		sampleRoll(schema.RollCompleted, 2, nil, nil, "2 nodes restarted"))
	ready(t, nc)
	out := capture(t)
	if got := run(context.Background(), []string{"roll", "--group", "default", "--min-healthy-time", "1s", "-s", url}); got != exitOK {
		t.Fatalf("exit code: got %d, want 0\nstdout:\n%s\nstderr:\n%s", got, out, errOut)
	}
	if polls.Load() < 3 {
		t.Errorf("polled %d times, want 3+", polls.Load())
	}
	for _, want := range []string{"roll roll-x1 started", "roll roll-x1 completed: 2/2 node(s) restarted", "node-1", "0.75s", "restarted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	// Without a terminal: one line per change, not per poll.
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "0/2 done; out: node-1 (idle)") || !strings.Contains(lines[1], "1/2 done; out: node-2 (stopping)") {
		t.Errorf("progress lines:\n%s", errOut)
	}
}

func TestRollFollowEndsOnFailure(t *testing.T) {
	nc, url := fakeCoordinator(t)
	errOut := fastFollow(t)
	rollScript(t, nc,
		sampleRoll(schema.RollRunning, 0, []string{"node-1"}, nil, ""),
		sampleRoll(schema.RollPaused, 1, nil, []string{"node-2"}, "paused: node-2 restart failed: boom; the escalation ladder takes it over"))
	ready(t, nc)
	out := capture(t)
	err := runRoll(context.Background(), []string{"roll", "--group", "default", "--min-healthy-time", "1s", "-s", url}[1:])
	if classifyExit(err) != exitFailed || !strings.Contains(err.Error(), "escalation ladder") {
		t.Fatalf("got %v (exit %d), want exit 1 with the message\nstderr:\n%s", err, classifyExit(err), errOut)
	}
	if !strings.Contains(out.String(), "FAILED: restart failed: boom") {
		t.Errorf("summary lacks the failure:\n%s", out)
	}
}

func TestRollInterruptStopsFollowingOnly(t *testing.T) {
	nc, url := fakeCoordinator(t)
	fastFollow(t)
	polls := rollScript(t, nc, sampleRoll(schema.RollRunning, 0, []string{"node-1"}, nil, ""))
	ready(t, nc)
	capture(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for polls.Load() < 3 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	err := runRoll(ctx, []string{"--group", "default", "--min-healthy-time", "1s", "-s", url})
	if err == nil || !strings.Contains(err.Error(), "restartcoord roll status roll-x1") || !strings.Contains(err.Error(), "goes on") {
		t.Fatalf("got %v, want how to follow again", err)
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		t.Errorf("not an exitError: %v", err)
	}
}

func TestRollDetachAndDryRun(t *testing.T) {
	nc, url := fakeCoordinator(t)
	polls := rollScript(t, nc, sampleRoll(schema.RollRunning, 0, []string{"node-1"}, nil, ""))
	if _, err := nc.Subscribe(schema.ClusterSubject(schema.OpRollPlan), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"type":"io.restartcoord.v1.roll_plan","plan":{"waves":[["node-1"],["node-2"]]},"blocked_by":["node-3 is not answering"]}`))
	}); err != nil {
		t.Fatal(err)
	}
	ready(t, nc)
	out := capture(t)
	if got := run(context.Background(), []string{"roll", "--group", "default", "--min-healthy-time", "1s", "--detach", "-s", url}); got != exitOK {
		t.Errorf("detach: exit %d, want 0", got)
	}
	if polls.Load() != 0 || !strings.Contains(out.String(), "roll roll-x1 started") {
		t.Errorf("detach polled %d times; output:\n%s", polls.Load(), out)
	}
	out.Reset()
	if got := run(context.Background(), []string{"roll", "--group", "default", "--dry-run", "-s", url}); got != exitFailed {
		t.Errorf("blocked dry run: exit %d, want 1", got)
	}
	if !strings.Contains(out.String(), "BLOCKED") || !strings.Contains(out.String(), "node-3 is not answering") {
		t.Errorf("dry run output:\n%s", out)
	}
}

// The exit codes that come from what the coordinators answer.
func TestClusterExitCodesFromReplies(t *testing.T) {
	nc, url := fakeCoordinator(t)
	answers := map[string]string{
		schema.ClusterSubject(schema.OpClusterHealth): `{"type":"io.restartcoord.v1.cluster_health","healthy":false,"leader":"c1","nodes_total":4,"nodes_healthy":3,
			"nodes_by_phase":{"idle":3,"unreachable":1},"active_rolls":0,"circuit_breaker":{"open":false,"reason":""}}`,
		schema.ClusterSubject(schema.OpClusterReport): `{"type":"io.restartcoord.v1.report","period":"168h0m0s","from":"2025-01-01T00:00:00Z","to":"2025-01-08T00:00:00Z",
			"total_restarts":1,"success_rate":0,"slo_compliance":{"success_rate":false,"duration":true},"targets":{"success_rate":99.5,"duration":30}}`,
	}
	var mu sync.Mutex
	bodies := map[string]string{}
	for subj, reply := range answers {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			bodies[m.Subject] = string(m.Data)
			mu.Unlock()
			_ = m.Respond([]byte(reply))
		}); err != nil {
			t.Fatal(err)
		}
	}
	ready(t, nc)
	out := capture(t)
	if got := run(context.Background(), []string{"cluster-health", "-s", url}); got != exitFailed {
		t.Errorf("unhealthy cluster: exit %d, want 1", got)
	}
	if !strings.Contains(out.String(), "3/4") || !strings.Contains(out.String(), "unreachable 1") {
		t.Errorf("cluster-health output:\n%s", out)
	}
	out.Reset()
	if got := run(context.Background(), []string{"report", "--window", "7d", "-s", url, "--json"}); got != exitFailed {
		t.Errorf("SLO missed: exit %d, want 1", got)
	}
	if !strings.Contains(out.String(), `"success_rate": false`) {
		t.Errorf("report --json output:\n%s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if b := bodies[schema.ClusterSubject(schema.OpClusterReport)]; b != `{"window":604800}` {
		t.Errorf("report body: got %s", b)
	}
}

func TestIsRollRestart(t *testing.T) {
	cases := []struct {
		restartID string
		want      bool
	}{
		{"roll-1-node-1", true},
		{"roll-1-node-1-retry1", true},
		{"roll-1-node-1-retry12", true},
		{"roll-1-node-10", false},
		{"roll-1-node-1-retry", false},
		{"roll-1-node-1-retryx", false},
		{"roll-2-node-1", false},
	}
	for _, tc := range cases {
		if got := isRollRestart(tc.restartID, "roll-1", "node-1"); got != tc.want {
			t.Errorf("isRollRestart(%q, roll-1, node-1): got %v, want %v", tc.restartID, got, tc.want)
		}
	}
}

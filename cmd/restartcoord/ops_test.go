package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// fakeDial records connection attempts and refuses them as an unreachable
// NATS would (exit 3), so a test tells "refused locally" (2) from "would
// have sent" (3).
func fakeDial(t *testing.T) *int {
	t.Helper()
	n := 0
	old := opsDial
	opsDial = func(context.Context, *connFlags, string) (*bus.Conn, error) {
		n++
		return nil, &exitError{code: exitNoNATS, err: errors.New("test: no NATS here")}
	}
	t.Cleanup(func() { opsDial = old })
	return &n
}

// capture sends the verbs' stdout to a buffer.
func capture(t *testing.T) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	old := opsOut
	opsOut = &buf
	t.Cleanup(func() { opsOut = old })
	return &buf
}

func TestBadUsageIsRefusedLocally(t *testing.T) {
	dir := t.TempDir()
	arrayFile := filepath.Join(dir, "array.json")
	badFile := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(arrayFile, []byte(`[1,2]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badFile, []byte(`{"a":`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
	}{
		{"restart missing node", []string{"restart"}},
		{"restart two nodes", []string{"restart", "node-1", "node-2"}},
		{"restart bad node id", []string{"restart", "node.1"}},
		{"restart node id with wildcard", []string{"restart", "*"}},
		{"restart bad reason", []string{"restart", "node-1", "--reason", "because"}},
		{"restart empty reason", []string{"restart", "node-1", "--reason="}},
		{"restart timeout too low", []string{"restart", "node-1", "--timeout-secs", "5"}},
		{"restart timeout too high", []string{"restart", "--timeout-secs=301", "node-1"}},
		{"restart timeout NaN", []string{"restart", "node-1", "--timeout-secs", "NaN"}},
		{"restart timeout not a number", []string{"restart", "node-1", "--timeout-secs", "ten"}},
		{"restart emergency and graceful", []string{"restart", "node-1", "--emergency", "--graceful=true"}},
		{"restart bad restart id", []string{"restart", "node-1", "--restart-id", "a b"}},
		{"restart unknown flag", []string{"restart", "node-1", "--force"}},
		{"health missing node", []string{"health", "--json"}},
		{"health bad node id", []string{"health", "node 1"}},
		{"status limit zero", []string{"status", "node-1", "--limit", "0"}},
		{"status limit too high", []string{"status", "node-1", "--history", "--limit", "1001"}},
		{"prepare missing node", []string{"prepare"}},
		{"reconnect-test bad session", []string{"reconnect-test", "node-1", "--session", "a.b"}},
		{"state without sub-verb", []string{"state"}},
		{"state unknown sub-verb", []string{"state", "wipe", "node-1"}},
		{"state backup missing node", []string{"state", "backup"}},
		{"restore without --yes", []string{"state", "restore", "node-1", "--backup", "1"}},
		{"restore without --backup", []string{"state", "restore", "node-1", "--yes"}},
		{"restore backup index zero", []string{"state", "restore", "node-1", "--backup", "0", "--yes"}},
		{"restore bad timeout", []string{"state", "restore", "node-1", "--backup", "1", "--yes", "--timeout-secs", "9"}},
		{"config without sub-verb", []string{"config", "node-1"}},
		{"config set without version", []string{"config", "set", "node-1"}},
		{"config set version too long", []string{"config", "set", "node-1", "--version", strings.Repeat("v", 65)}},
		{"config set node and group", []string{"config", "set", "node-1", "--group", "g", "--version", "2"}},
		{"config set neither node nor group", []string{"config", "set", "--version", "2"}},
		{"config set bad group", []string{"config", "set", "--group", "a.b", "--version", "2"}},
		{"config set missing file", []string{"config", "set", "node-1", "--version", "2", "--file", filepath.Join(dir, "none.json")}},
		{"config set file not an object", []string{"config", "set", "node-1", "--version", "2", "--file", arrayFile}},
		{"config set file not JSON", []string{"config", "set", "node-1", "--version", "2", "--file", badFile}},
		{"config get bad node", []string{"config", "get", "node/1"}},
		{"task create without title", []string{"task", "create", "node-1"}},
		{"task create zero steps", []string{"task", "create", "node-1", "--title", "x", "--steps", "0"}},
		{"task create step seconds without steps", []string{"task", "create", "node-1", "--title", "x", "--step-seconds", "2"}},
		{"task create bad client", []string{"task", "create", "node-1", "--title", "x", "--client", "a.b"}},
		{"task get without id", []string{"task", "get", "node-1"}},
		{"task get bad id", []string{"task", "get", "node-1", "t.1"}},
		{"task list bad status", []string{"task", "list", "node-1", "--status", "done"}},
		{"task list limit zero", []string{"task", "list", "node-1", "--limit", "0"}},
		{"task update nothing", []string{"task", "update", "node-1", "t1"}},
		{"task update progress too high", []string{"task", "update", "node-1", "t1", "--progress", "101"}},
		{"task update checkpoint not JSON", []string{"task", "update", "node-1", "t1", "--checkpoint", "{oops"}},
		{"task complete result not JSON", []string{"task", "complete", "node-1", "t1", "--result", "done"}},
		{"task fail without error", []string{"task", "fail", "node-1", "t1"}},
		{"task bad request id", []string{"task", "get", "node-1", "t1", "--request-id", "a b"}},
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

// Valid requests get as far as connecting (here refused: exit 3), so the
// refusals above are the validation's, not an accident.
func TestValidUsageConnects(t *testing.T) {
	cases := [][]string{
		{"restart", "node-1"},
		{"restart", "--emergency", "node-1", "--reason", "error_recovery", "--timeout-secs", "10", "--restart-id", "r-1", "--json"},
		{"restart", "node-1", "--graceful=false", "--no-preserve-state"},
		{"health", "node-1", "--json"},
		{"status", "node-1", "--history", "--limit", "5"},
		{"prepare", "node-1"},
		{"reconnect-test", "node-1", "--session", "s-1"},
		{"state", "backup", "node-1"},
		{"state", "backups", "node-1"},
		{"state", "restore", "node-1", "--backup", "2", "--yes"},
		{"state", "-s", "nats://127.0.0.1:1", "restore", "node-1", "--backup", "snap_1", "--yes"},
		{"config", "set", "--group", "default", "--version", "7"},
		{"config", "get", "node-1"},
		{"task", "create", "node-1", "--title", "t", "--steps", "3", "--step-seconds", "0.5"},
		{"task", "list", "node-1", "--status", "active"},
		{"task", "update", "node-1", "t1", "--checkpoint", `{"step":3}`},
		{"task", "complete", "node-1", "t1", "--result", `"ok"`},
		{"task", "fail", "node-1", "t1", "--error", "boom"},
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

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"restart", "-h"}, {"health", "--help"}, {"state", "-h"}, {"state", "restore", "-h"}, {"task", "create", "-h"}} {
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

func TestRestartBodyHasOnlySetFlags(t *testing.T) {
	cases := []struct {
		name        string
		args        []string
		want        map[string]any
		wantTimeout float64
	}{
		{"nothing set", nil, map[string]any{}, 30},
		{"emergency", []string{"--emergency"}, map[string]any{"graceful": false}, 30},
		{"graceful false", []string{"--graceful=false"}, map[string]any{"graceful": false}, 30},
		{"graceful true", []string{"--graceful"}, map[string]any{"graceful": true}, 30},
		{"all", []string{"--no-preserve-state", "--reason", "schema_migration", "--timeout-secs", "120", "--restart-id", "r1"},
			map[string]any{"preserve_state": false, "reason": "schema_migration", "timeout": 120.0, "restart_id": "r1"}, 120},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newOpsFlags("restart", restartUsage)
			graceful := o.fs.Bool("graceful", true, "")
			emergency := o.fs.Bool("emergency", false, "")
			noPreserve := o.fs.Bool("no-preserve-state", false, "")
			reason := o.fs.String("reason", "manual_request", "")
			secs := o.fs.Float64("timeout-secs", 30, "")
			id := o.fs.String("restart-id", "", "")
			if err := o.fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			body, timeout, err := restartBody(o.set(), *graceful, *emergency, *noPreserve, *reason, *secs, *id)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(body, tc.want) {
				t.Errorf("body: got %v, want %v", body, tc.want)
			}
			if timeout != tc.wantTimeout {
				t.Errorf("timeout: got %v, want %v", timeout, tc.wantTimeout)
			}
		})
	}
}

// The sample of CONTRACT.md, with a migration and an error.
const sampleRestart = `{"type":"io.restartcoord.v1.restart_result","success":true,"restart_id":"r-42","node_id":"node-1",
 "graceful":true,"preserve_state":true,"timeout":30,"reason":"schema_migration",
 "phase":"complete","progress":100,"message":"restart complete","started_at":"2025-01-01T10:00:00Z","completed_at":"2025-01-01T10:00:00.41Z",
 "duration":0.41,"old_pid":123,"new_pid":456,
 "state":{"preserved":true,"tasks_saved":10000,"tasks_restored":10000,"sessions_restored":12,"journal_replayed":5,
          "size_bytes":8123456,"checksum":"sha256:abc","schema_version":2,"migrated_from":1,"config_version":"v7"},
 "buffered_requests_replayed":37,"errors":["drain took 3s longer than expected"]}`

func TestRenderRestart(t *testing.T) {
	now = func() time.Time { return time.Date(2025, 1, 1, 10, 1, 0, 0, time.UTC) }
	t.Cleanup(func() { now = time.Now })
	var r schema.RestartResult
	if err := json.Unmarshal([]byte(sampleRestart), &r); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	renderRestart(&buf, &r)
	out := buf.String()
	for _, want := range []string{
		"restart of node-1 succeeded", "restart_id:", "r-42", "graceful", "schema_migration", "0.41s",
		"123 -> 456", "10000 saved, 10000 restored", "sessions restored:", "12", "2 (migrated from 1)",
		"config_version:", "v7", "buffered requests replayed:", "37", "drain took 3s longer than expected",
		"7.7 MiB (8123456 bytes)", "sha256:abc",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	r.Success, r.Graceful, r.Phase = false, false, schema.PhaseFailed
	r.Error = &schema.Error{Code: schema.CodeProcessFailed, Message: "new worker never became healthy"}
	buf.Reset()
	renderRestart(&buf, &r)
	out = buf.String()
	for _, want := range []string{"restart of node-1 FAILED", "emergency", "PROCESS_FAILED: new worker never became healthy", "failed (100%)"} {
		if !strings.Contains(out, want) {
			t.Errorf("failed output lacks %q:\n%s", want, out)
		}
	}
}

const sampleHealth = `{"type":"io.restartcoord.v1.health","healthy":false,"timestamp":"2025-01-01T10:00:00Z","server_version":"0.1.0",
 "node_id":"node-1","group":"default","phase":"idle","uptime_seconds":125.5,"worker_pid":4242,"worker_uptime_seconds":12.5,
 "config_version":"v7","state_schema_version":2,
 "checks":{"reboot_readiness":{"ready":false,"issues":["worker not answering"],"details":{}},
           "database":{"connected":true,"status":"operational","latency_ms":0.25},
           "connections":{"active_connections":3,"status":"operational"},
           "state":{"size_bytes":2048,"tasks":17,"last_snapshot_at":"2025-01-01T09:55:00Z","backups":10}}}`

func TestRenderHealth(t *testing.T) {
	now = func() time.Time { return time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC) }
	t.Cleanup(func() { now = time.Now })
	var h schema.Health
	if err := json.Unmarshal([]byte(sampleHealth), &h); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	renderHealth(&buf, &h)
	out := buf.String()
	for _, want := range []string{
		"node-1 (group default): healthy: no", "phase:", "idle", "pid 4242, up 12.5s", "config_version:", "v7",
		"state_schema_version:", "read latency 0.25 ms", "active connections:", "3 (operational)",
		"2.0 KiB (2048 bytes)", "state tasks:", "17", "2025-01-01T09:55:00Z (5m0s ago)", "backups:", "10",
		"worker not answering",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderStatusHistory(t *testing.T) {
	ok := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	s := schema.RestartStatus{NodeID: "node-1", CurrentStatus: schema.CurrentStatus{Phase: schema.PhaseIdle},
		History: &schema.History{TotalRestarts: 7, LastSuccessfulRestart: &ok, RecentRestarts: []schema.HistoryEntry{
			{RestartID: "r2", Timestamp: ok, Reason: schema.ReasonManualRequest, Graceful: true, Success: true, Duration: 0.5, OldPID: 10, NewPID: 11},
			{RestartID: "r1", Timestamp: ok.Add(-time.Hour), Reason: schema.ReasonErrorRecovery, Success: false, Duration: 1.5, OldPID: 9, NewPID: 10},
		}}}
	var buf bytes.Buffer
	renderStatus(&buf, &s)
	out := buf.String()
	for _, want := range []string{"TIME", "REASON", "manual_request", "error_recovery", "10 -> 11", "0.50s",
		"1 succeeded, 1 failed", "total restarts:", "7", "last failed:", "never"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderRestore(t *testing.T) {
	r := schema.StateRestore{NodeID: "node-1",
		RestoredTo: schema.SnapshotInfo{Index: 2, SnapshotID: "s-old", Tasks: 5},
		ArchivedAs: schema.SnapshotInfo{Index: 1, SnapshotID: "s-arch", Tasks: 8},
		Discarded:  schema.DiscardReport{TasksCreated: []string{"t6", "t7", "t8"}, TasksChanged: []string{"t1"}, JournalWrites: 9},
		Restart:    schema.RestartResult{Success: true, RestartID: "r9", Graceful: true, OldPID: 1, NewPID: 2}}
	var buf bytes.Buffer
	renderRestore(&buf, &r)
	out := buf.String()
	for _, want := range []string{"#2 snapshot s-old", "snapshot s-arch", "3 (t6, t7, t8)", "1 (t1)", "journal writes:", "9",
		"--backup s-arch --yes", "1 -> 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// Errors map to the exit codes of CONTRACT.md the way classify does.
func TestOpErrorExitCodes(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		err  error
		want int
		msg  string
	}{
		{"in progress", schema.Errorf(schema.CodeRestartInProgress, "restart r1 is in progress").WithDetail("restart_id", "r1"), exitUsage, "restart_id: r1"},
		{"not ready", schema.Errorf(schema.CodeSystemNotReady, "no").WithDetail("blocking_issues", []any{"a", "b"}), exitUsage, "blocking_issues: a, b"},
		{"invalid", schema.Invalid("timeout", "timeout must be 10..300 seconds, got 5"), exitUsage, "INVALID_PARAMETERS"},
		{"process failed", schema.Errorf(schema.CodeProcessFailed, "worker died"), exitFailed, "PROCESS_FAILED: worker died"},
		{"timeout", fmt.Errorf("%w: subj", bus.ErrTimeout), exitNoNATS, "restartcoord status node-1"},
		{"no responders", fmt.Errorf("%w on subj", bus.ErrNoResponders), exitNoNATS, "is the node running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := opError(ctx, "node-1", schema.OpRestart, tc.err, time.Minute)
			if got := classifyExit(err); got != tc.want {
				t.Errorf("exit code: got %d, want %d (%v)", got, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q lacks %q", err, tc.msg)
			}
		})
	}
}

// classifyExit is exitCode without its printing.
func classifyExit(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return classify(err)
}

func TestDefaultClientIDIsToken(t *testing.T) {
	if id := defaultClientID(); !schema.ValidToken(id) || !strings.HasPrefix(id, "cli") {
		t.Errorf("default client id %q is not a cli-... token", id)
	}
}

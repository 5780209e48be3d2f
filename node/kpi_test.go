package node_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// Reconnection counts are per restart and survive the worker: a client
// that never comes back fails once per restart it had a session before,
// and a new worker still reports what the previous ones counted.
func TestReconnectionCountsSurviveAWorkerRestart(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.ReconnectWindow = 1500 * time.Millisecond
	e.startNode(cfg)
	back, gone := e.client("back", "n1"), e.client("gone", "n1")
	ctx := context.Background()
	for _, c := range []interface {
		ListTasks(context.Context, schema.TaskListArgs) (*schema.TaskList, error)
	}{back, gone} {
		if _, err := c.ListTasks(ctx, schema.TaskListArgs{Limit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	stats := func() schema.ReconnectionStats {
		var rt schema.ReconnectTest
		if err := e.req("n1", schema.OpReconnectTest, map[string]any{"include_buffer_status": false}, &rt); err != nil {
			t.Fatal(err)
		}
		return *rt.Results.ReconnectionStats
	}
	waitStats := func(what string, ok, bad int) {
		t.Helper()
		var got schema.ReconnectionStats
		waitFor(t, 10*time.Second, what, func() bool {
			got = stats()
			return got.SuccessfulReconnections == ok && got.FailedReconnections == bad
		})
		if got.AverageReconnectionTime < 0 || got.AverageReconnectionTime > 1.5 {
			t.Fatalf("%s: average %v s, want within the window", what, got.AverageReconnectionTime)
		}
	}

	e.restart("n1", map[string]any{})
	if _, err := back.CreateTask(ctx, schema.TaskCreateArgs{Title: "after the first restart"}); err != nil {
		t.Fatal(err)
	}
	waitStats("1 back and 1 failed after the window of the first restart", 1, 1)

	// An emergency restart: a new worker, with nobody back yet.
	e.restart("n1", map[string]any{"graceful": false})
	if got := stats(); got.SuccessfulReconnections != 1 || got.FailedReconnections != 1 {
		t.Fatalf("after a worker restart: %+v, want the first restart's 1 back and 1 failed kept", got)
	}
	if _, err := back.CreateTask(ctx, schema.TaskCreateArgs{Title: "after the second restart"}); err != nil {
		t.Fatal(err)
	}
	waitStats("2 back and 2 failed after the window of the second restart", 2, 2)

	// Each restart's outcome is kept in ORCH_EVENTS, for the report.
	var outs []schema.ReconnectionOutcome
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.bs.ReadSubject(rctx, schema.StreamEvents, schema.NodeEventSubject("n1", schema.EventReconnection), func(data []byte) error {
		var o schema.ReconnectionOutcome
		if err := json.Unmarshal(data, &o); err != nil {
			return err
		}
		outs = append(outs, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("%d outcomes stored, want one per restart: %+v", len(outs), outs)
	}
	for i, o := range outs {
		if o.Expected != 2 || o.Reconnected != 1 || o.Failed != 1 || strings.Join(o.FailedClients, ",") != "gone" || o.RestartID == "" {
			t.Errorf("outcome %d: %+v, want 1 of 2 back and gone failed", i, o)
		}
	}
}

// shutdown.prepare measures whether the jobs can be suspended: a step that
// ends after the suspend timeout would be abandoned, so the node is not
// ready; once the task no longer runs, it is.
func TestPrepareSaysWaitingForAStepPastTheSuspendTimeout(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.SuspendTimeout = time.Second
	e.startNode(cfg)
	c := e.client("c1", "n1")
	ctx := context.Background()
	task, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: "slow", Job: &schema.Job{Kind: "steps", Steps: 3, StepSeconds: 60}})
	if err != nil {
		t.Fatal(err)
	}
	prepare := func() schema.ShutdownReadiness {
		var pr schema.ShutdownReadiness
		if err := e.req("n1", schema.OpPrepare, nil, &pr); err != nil {
			t.Fatal(err)
		}
		return pr
	}
	var pr schema.ShutdownReadiness
	waitFor(t, 5*time.Second, "the job's step to be measured", func() bool {
		pr = prepare()
		return pr.Checks.ActiveTasks.Status != "ready"
	})
	a := pr.Checks.ActiveTasks
	if a.Suspendable || a.Status != "waiting" || a.Count != 1 || !strings.Contains(a.Reason, task.TaskID) || pr.ReadyForShutdown ||
		!strings.Contains(strings.Join(pr.BlockingIssues, "; "), "mid-step") {
		t.Fatalf("with a 60 s step and a 1 s suspend timeout: %+v %+v", pr, a)
	}
	if _, err := c.FailTask(ctx, task.TaskID, "not needed"); err != nil {
		t.Fatal(err)
	}
	pr = prepare()
	if a := pr.Checks.ActiveTasks; !a.Suspendable || a.Status != "ready" || a.Count != 0 || !pr.ReadyForShutdown {
		t.Fatalf("with no task running: %+v %+v", pr, a)
	}
}

// A restart inside the previous one's window carries that window into its
// own: the client back after the first restart still counts, and the one
// never back fails once, in one stored outcome.
func TestReconnectionWindowCutShortIsCarriedOnce(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.ReconnectWindow = 8 * time.Second
	e.startNode(cfg)
	back, gone := e.client("back", "n1"), e.client("gone", "n1")
	ctx := context.Background()
	for _, c := range []interface {
		ListTasks(context.Context, schema.TaskListArgs) (*schema.TaskList, error)
	}{back, gone} {
		if _, err := c.ListTasks(ctx, schema.TaskListArgs{Limit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	first := e.restart("n1", map[string]any{})
	if _, err := back.CreateTask(ctx, schema.TaskCreateArgs{Title: "back"}); err != nil {
		t.Fatal(err)
	}
	// Let the supervisor read the window with back counted (heartbeats
	// read every 100 ms), then kill the worker inside it.
	time.Sleep(300 * time.Millisecond)
	second := e.restart("n1", map[string]any{"graceful": false})
	if second.CompletedAt.Sub(first.CompletedAt) > 6*time.Second {
		t.Fatalf("the second restart ended %s after the first: not inside its 8 s window", second.CompletedAt.Sub(first.CompletedAt))
	}
	if _, err := back.CreateTask(ctx, schema.TaskCreateArgs{Title: "back again"}); err != nil {
		t.Fatal(err)
	}
	var rt schema.ReconnectTest
	waitFor(t, 15*time.Second, "the carried window to close", func() bool {
		return e.req("n1", schema.OpReconnectTest, map[string]any{"include_buffer_status": false}, &rt) == nil &&
			rt.Results.ReconnectionStats.FailedReconnections > 0
	})
	if rs := rt.Results.ReconnectionStats; rs.SuccessfulReconnections != 2 || rs.FailedReconnections != 1 {
		t.Fatalf("stats %+v: want back twice, gone failed once", rs)
	}
	var outs []schema.ReconnectionOutcome
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.bs.ReadSubject(rctx, schema.StreamEvents, schema.NodeEventSubject("n1", schema.EventReconnection), func(data []byte) error {
		var o schema.ReconnectionOutcome
		if err := json.Unmarshal(data, &o); err != nil {
			return err
		}
		outs = append(outs, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].RestartID != second.RestartID || outs[0].Reconnected != 2 || outs[0].Failed != 1 {
		t.Fatalf("outcomes %+v: want one, the second restart's, with the first carried", outs)
	}
}

package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

func TestIdleSessionsExpireAndStayExpired(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.CleanupInterval, cfg.SessionIdle = 100*time.Millisecond, 400*time.Millisecond
	e.startNode(cfg)
	idle, busy := e.client("idle", "n1"), e.client("busy", "n1")
	ctx := context.Background()
	if _, err := idle.CreateTask(ctx, schema.TaskCreateArgs{Title: "once"}); err != nil {
		t.Fatal(err)
	}
	clients := func() map[string]bool {
		var l schema.ClientList
		if err := e.req("n1", schema.OpClients, nil, &l); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, c := range l.Clients {
			out[c.ClientID] = true
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := busy.ListTasks(ctx, schema.TaskListArgs{Limit: 1}); err != nil {
			t.Fatal(err)
		}
		got := clients()
		if !got["idle"] && got["busy"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions %v: the idle one never expired (or the busy one did)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The expiry was journaled: a restart does not bring the session back.
	e.restart("n1", map[string]any{"graceful": false})
	if clients()["idle"] {
		t.Fatal("the expired session came back after a restart")
	}
}

// After a restart, each session's first answered request counts as a
// reconnection, with the time from the node being back to that answer.
func TestReconnectionStatsCountSessionsAnsweredAfterARestart(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	a, b := e.client("a", "n1"), e.client("b", "n1")
	ctx := context.Background()
	for _, c := range []interface {
		ListTasks(context.Context, schema.TaskListArgs) (*schema.TaskList, error)
	}{a, b} {
		if _, err := c.ListTasks(ctx, schema.TaskListArgs{Limit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	e.restart("n1", map[string]any{})
	if _, err := a.CreateTask(ctx, schema.TaskCreateArgs{Title: "after the restart"}); err != nil {
		t.Fatal(err)
	}
	var rt schema.ReconnectTest
	if err := e.req("n1", schema.OpReconnectTest, nil, &rt); err != nil {
		t.Fatal(err)
	}
	rs := rt.Results.ReconnectionStats
	if rs.SuccessfulReconnections != 1 || rs.FailedReconnections != 0 || rs.AverageReconnectionTime < 0 || rs.AverageReconnectionTime > 5 {
		t.Fatalf("after one of two sessions came back: %+v", rs)
	}
	if rt.Results.AllSessions.TotalSessions != 2 || rt.Results.AllSessions.ReachableSessions != 2 || rt.OverallStatus != schema.StatusPass {
		t.Fatalf("sessions %+v overall %s", rt.Results.AllSessions, rt.OverallStatus)
	}
}

package coordinator_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

// sessionOn makes a client of nodeID with a session: one answered request.
func (f *fleet) sessionOn(clientID, nodeID string) *client.Client {
	f.t.Helper()
	nc, err := nats.Connect(f.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := client.New(nc, clientID, nodeID, client.WithReplyPoll(500*time.Millisecond))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = c.Close(); nc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.ListTasks(ctx, schema.TaskListArgs{Limit: 1}); err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fleet) report() coordinator.Report {
	f.t.Helper()
	var r coordinator.Report
	if err := f.cluster(schema.OpClusterReport, map[string]any{}, &r); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// Cluster health adds up the nodes' client sessions, cluster.nodes shows
// each node's with its restarts, and the report counts, per restart, the
// clients that came back within the window and the one that never did.
func TestClusterHealthCountsActiveConnectionsAndTheReportReconnections(t *testing.T) {
	f := newFleet(t, false)
	cfg := f.nodeConfig("n01", 1)
	cfg.ReconnectWindow = time.Second
	n1, n2 := f.runNode(cfg), f.runNode(f.nodeConfig("n02", 2))
	n1.awaitReady(t)
	n2.awaitReady(t)
	ccfg := f.coordConfig("c1")
	// The SLO alerts' report every 200 ms, over the last 4 s: the restart
	// below leaves that window 4 s after it happened.
	ccfg.ReportEvery, ccfg.SLOWindow = 200*time.Millisecond, 4*time.Second
	f.startCoordinatorWith(ccfg)
	back := f.sessionOn("back", "n01")
	f.sessionOn("gone", "n01")
	f.sessionOn("other", "n02")
	var h schema.ClusterHealth
	f.waitFor(10*time.Second, "3 active connections in cluster health", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.ActiveConnections == 3
	})
	nodes := f.nodes()
	if a, b := nodes["n01"], nodes["n02"]; a.ActiveConnections != 2 || b.ActiveConnections != 1 || a.StartedAt == nil || b.StartedAt == nil ||
		a.BufferedRequests != 0 || a.LastRestart != nil || a.RestartCount24h != 0 {
		t.Fatalf("nodes: n01 %+v n02 %+v", a, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res schema.RestartResult
	if err := f.conn.RequestJSON(ctx, schema.NodeSubject("n01", schema.OpRestart), map[string]any{}, nil, &res); err != nil || !res.Success {
		t.Fatalf("restart: %+v %v", res, err)
	}
	if _, err := back.CreateTask(ctx, schema.TaskCreateArgs{Title: "back after the restart"}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(10*time.Second, "n01's restart in cluster.nodes", func() bool {
		n := f.nodes()["n01"]
		return n.RestartCount24h == 1 && n.LastRestart != nil && n.LastRestart.Equal(res.CompletedAt) &&
			n.StartedAt != nil && !n.StartedAt.Before(res.CompletedAt.Add(-time.Second))
	})
	if err := f.cluster(schema.OpClusterHealth, map[string]any{}, &h); err != nil || h.RestartCount24h != 1 || f.nodes()["n02"].RestartCount24h != 0 {
		t.Fatalf("health after one restart: %+v %v", h, err)
	}
	var rep coordinator.Report
	f.waitFor(15*time.Second, "the restart's reconnection window in the report", func() bool {
		rep = f.report()
		return rep.Reconnection.Restarts == 1
	})
	if rep.Reconnection.Reconnected != 1 || rep.Reconnection.Failed != 1 || rep.ReconnectionRate != 50 || rep.SLOCompliance["reconnection"] {
		t.Fatalf("reconnection %+v rate %v slo %v: want 1 back, 1 never back", rep.Reconnection, rep.ReconnectionRate, rep.SLOCompliance)
	}
	if g := rep.ByType[coordinator.TypeGraceful]; g == nil || g.Total != 1 || g.Succeeded != 1 || rep.DowntimeByNode["n01"] == nil {
		t.Fatalf("by type %+v, downtime %+v", rep.ByType, rep.DowntimeByNode)
	}
	// The leader's own report, over its 4 s window, alerted: reconnection
	// under 95% (and the reconnection SLO not met), each resolved once the
	// restart is out of the window.
	if a := awaitAlert(t, f, schema.AlertReconnectionRate, "", firing, 1); a.Details["rate"] != float64(50) {
		t.Fatalf("reconnection_rate alert %+v, want a rate of 50", a)
	}
	awaitAlert(t, f, schema.AlertSLOViolation, "", firing, 1)
	for _, kind := range []string{schema.AlertReconnectionRate, schema.AlertSLOViolation} {
		awaitAlert(t, f, kind, "", resolved, 1)
		wantAlerts(t, f, kind, "", firing, 1)
	}
}

// A node declared failed is down, in the report, from its last heartbeat
// until it is heard again; the outage ends when it comes back.
func TestReportCountsTheDowntimeOfANodeDeclaredFailed(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(2)
	cmd := f.startNodeProcess("n09", 9)
	f.startCoordinator("c1")
	f.waitFor(10*time.Second, "n09 in view", func() bool { return f.nodes()["n09"].Healthy })
	killed := time.Now()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	f.waitFor(10*time.Second, "n09 declared failed", func() bool { return f.nodes()["n09"].Failed })
	awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", firing, 1)
	if d := f.report().DowntimeByNode["n09"]; d == nil || d.FailedSeconds <= 0 || d.RestartSeconds != 0 || !d.WithinBudget {
		t.Fatalf("n09 declared failed: downtime %+v", d)
	}
	time.Sleep(time.Second)
	f.startNodeProcess("n09", 9)
	back := time.Now()
	// Heard again: recovered (which ends its downtime), and healthy: its
	// health_check_failed resolved, which the downtime does not read.
	awaitAlert(t, f, coordinator.AlertNodeRecovered, "n09", firing, 1)
	awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", resolved, 1)
	first := f.report().DowntimeByNode["n09"]
	time.Sleep(time.Second)
	second := f.report().DowntimeByNode["n09"]
	if first == nil || second == nil || first.FailedSeconds != second.FailedSeconds {
		t.Fatalf("the outage did not end with the recovery: %+v then %+v", first, second)
	}
	// From before the kill (the last heartbeat) to a little after it was
	// healthy again (the next heartbeat the coordinator heard).
	if max := back.Sub(killed).Seconds() + 1; first.FailedSeconds < 1 || first.FailedSeconds > max {
		t.Fatalf("n09 down %v s, want 1..%.1f s", first.FailedSeconds, max)
	}
	if rep := f.report(); rep.SLOCompliance["downtime"] != (first.Seconds <= rep.DowntimeBudgetSeconds) {
		t.Fatalf("downtime SLO %v with n09 down %v s of %v", rep.SLOCompliance["downtime"], first.Seconds, rep.DowntimeBudgetSeconds)
	}
}

// cluster.nodes shows the requests waiting in a node's buffer, here one
// whose worker cannot start, and no worker start time while none serves.
func TestClusterNodesShowBufferedRequests(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if _, err := kv.Put(ctx, "n02", []byte(`{"config_version":"bad","fail_start":true}`)); err != nil {
		t.Fatal(err)
	}
	f.startNodes(1)
	f.startNodeNoWait("n02", 2)
	f.startCoordinator("c1")
	for i := range 7 {
		m := nats.NewMsg(schema.RequestSubject("n02", "c1"))
		m.Header.Set(schema.HeaderReplyTo, "_INBOX.test")
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("req-%d", i))
		m.Data = []byte(`{"op":"task.list","args":{}}`)
		if _, err := f.bs.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var n schema.ClusterNode
	f.waitFor(15*time.Second, "n02's 7 buffered requests in cluster.nodes", func() bool {
		n = f.nodes()["n02"]
		return n.BufferedRequests == 7
	})
	if n.StartedAt != nil || n.ActiveConnections != 0 || n.Healthy {
		t.Fatalf("n02 without a worker: %+v", n)
	}
	if n1 := f.nodes()["n01"]; n1.BufferedRequests != 0 || n1.StartedAt == nil {
		t.Fatalf("n01: %+v", n1)
	}
}

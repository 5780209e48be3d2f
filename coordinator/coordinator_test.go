package coordinator_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/schema"
)

// rollNode results of one roll, per node, from the nodes' own histories.
func rollResults(rs []schema.RestartResult, rollID string) map[string][]schema.RestartResult {
	out := map[string][]schema.RestartResult{}
	for _, r := range rs {
		if strings.HasPrefix(r.RestartID, rollID+"-") {
			out[r.NodeID] = append(out[r.NodeID], r)
		}
	}
	return out
}

func TestRollOverTenNodesRespectsTheBudget(t *testing.T) {
	f := newFleet(t, !testing.Short())
	ids := f.startNodes(10)
	f.startCoordinator("c1")
	f.startCoordinator("c2")
	f.waitFor(10*time.Second, "10 healthy nodes", func() bool {
		n := 0
		for _, x := range f.nodes() {
			if x.Healthy {
				n++
			}
		}
		return n == 10
	})
	var plan schema.RollPlan
	if err := f.cluster(schema.OpRollPlan, map[string]any{"selector": map[string]any{"group": "default"}, "max_unavailable": 2}, &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Plan.Waves) != 5 || plan.Plan.Waves[0][0] != "n01" || plan.Plan.Waves[4][1] != "n10" {
		t.Fatalf("plan %+v", plan)
	}
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"max_unavailable": 2, "min_healthy_time": 0.2}, &st); err != nil {
		t.Fatal(err)
	}
	f.waitRoll(st.RollID, 90*time.Second)
	per := rollResults(f.restartResults(), st.RollID)
	var all []schema.RestartResult
	for _, id := range ids {
		if len(per[id]) != 1 || !per[id][0].Success {
			t.Fatalf("node %s restarted %d times by the roll, want once: %+v", id, len(per[id]), per[id])
		}
		all = append(all, per[id][0])
	}
	if m := maxConcurrent(all); m > 2 {
		t.Fatalf("%d restarts overlapped; the budget is 2", m)
	}
	// Priority order: n01 (priority 0) started no later than n10 (priority 9).
	if per["n10"][0].StartedAt.Before(per["n01"][0].StartedAt) {
		t.Fatal("priority order not kept")
	}
}

func TestLeaderKilledMidRollAnotherFinishesIt(t *testing.T) {
	f := newFleet(t, !testing.Short())
	ids := f.startNodes(6)
	c1 := f.startCoordinator("c1")
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	_, oldTerm := c1.IsLeader()
	c2 := f.startCoordinator("c2")
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"max_unavailable": 1, "min_healthy_time": 0.3}, &st); err != nil {
		t.Fatal(err)
	}
	f.waitFor(60*time.Second, "two nodes done", func() bool { return f.rollStatus(st.RollID).Done >= 2 })
	killed := time.Now()
	c1.Kill() // no lease release: c2 must wait for it to expire
	f.waitFor(15*time.Second, "c2 to take over", func() bool { ok, _ := c2.IsLeader(); return ok })
	_, newTerm := c2.IsLeader()
	t.Logf("takeover after %s (lease TTL 3s); term %d -> %d", time.Since(killed).Round(time.Millisecond), oldTerm, newTerm)
	if newTerm <= oldTerm {
		t.Fatalf("new term %d not above %d", newTerm, oldTerm)
	}
	f.waitRoll(st.RollID, 90*time.Second)
	per := rollResults(f.restartResults(), st.RollID)
	var all []schema.RestartResult
	for _, id := range ids {
		if len(per[id]) != 1 {
			t.Fatalf("node %s restarted %d times by the roll, want exactly once", id, len(per[id]))
		}
		all = append(all, per[id][0])
	}
	if m := maxConcurrent(all); m > 1 {
		t.Fatalf("%d restarts overlapped; the budget is 1", m)
	}
	// The deposed leader's commands are refused by a node the new one commanded.
	last := ids[len(ids)-1]
	hdr := nats.Header{schema.HeaderFencingToken: []string{strconv.FormatUint(oldTerm, 10)}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := f.conn.RequestJSON(ctx, schema.NodeSubject(last, schema.OpRestart), map[string]any{}, hdr, &schema.RestartResult{})
	var se *schema.Error
	if !errors.As(err, &se) || se.Code != schema.CodeStaleFencingToken {
		t.Fatalf("restart from the deposed leader: %v, want STALE_FENCING_TOKEN", err)
	}
}

func TestNeverHealthyNodeIsQuarantinedAndTheRollPauses(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	// n02's workers fail at start, and it has never had a configuration that works.
	if _, err := kv.Put(ctx, "n02", []byte(`{"config_version":"broken","fail_start":true}`)); err != nil {
		t.Fatal(err)
	}
	f.startNodes(1)
	f.startNodeNoWait("n02", 1)
	f.startNodesFrom(3, 1)
	c1 := f.startCoordinator("c1")
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"min_healthy_time": 0.1}, &st); err != nil {
		t.Fatal(err)
	}
	f.waitFor(90*time.Second, "n02 quarantined", func() bool { return f.nodes()["n02"].Quarantined })
	n := f.nodes()["n02"]
	if n.EscalationLevel != 3 || !n.Degraded || n.Failures < 8 {
		t.Fatalf("n02 %+v", n)
	}
	if len(f.alerts(schema.SeverityWarning, "escalation_degraded")) == 0 || len(f.alerts(schema.SeverityCritical, "escalation_quarantine")) == 0 {
		t.Fatal("no degraded or quarantine alert")
	}
	// The roll does not hang: n02 uses up the budget of 1 and will not recover by itself.
	f.waitFor(10*time.Second, "the roll to pause", func() bool { return f.rollStatus(st.RollID).State == schema.RollPaused })
	s := f.rollStatus(st.RollID)
	if s.Done != 0 || !strings.Contains(s.Message, "n02") {
		t.Fatalf("paused roll %+v", s)
	}
	// Fixed and released by hand, n02 comes back, and the roll resumes to the end.
	if _, err := kv.Put(ctx, "n02", []byte(`{"config_version":"fixed"}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.conn.RequestJSON(ctx, schema.ClusterNodeSubject("n02", "release"), map[string]any{}, nil, &schema.ClusterNode{}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(30*time.Second, "n02 restarted on the fixed configuration", func() bool {
		var r schema.RestartResult
		err := f.conn.RequestJSON(ctx, schema.NodeSubject("n02", schema.OpRestart), map[string]any{"reason": "configuration_update"}, nil, &r)
		return err == nil && r.Success // RESTART_IN_PROGRESS: its own recovery is under way; try again
	})
	if err := f.cluster(schema.OpRollResume, map[string]any{"roll_id": st.RollID}, &s); err != nil {
		t.Fatal(err)
	}
	f.waitRoll(st.RollID, 60*time.Second)
}

func TestSilentNodeIsDeclaredFailedNotRestarted(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(2)
	cmd := f.startNodeProcess("n09", 9)
	f.startCoordinator("c1")
	f.waitFor(10*time.Second, "n09 in view", func() bool { return f.nodes()["n09"].Healthy })
	before := len(f.restartResults())
	killed := time.Now()
	_ = cmd.Process.Signal(syscall.SIGKILL) // the whole node: supervisor and (by pdeathsig) worker
	_ = cmd.Wait()
	f.waitFor(10*time.Second, "n09 declared failed", func() bool { return f.nodes()["n09"].Failed })
	t.Logf("SIGKILL of the whole node to declared failed: %s (heartbeat 200ms, 3 missed + 200ms health)", time.Since(killed).Round(time.Millisecond))
	if a := f.alerts(schema.SeverityCritical, "health_check_failed"); len(a) != 1 || a[0]["node_id"] != "n09" {
		t.Fatalf("alerts %v", a)
	}
	time.Sleep(time.Second)
	if after := len(f.restartResults()); after != before {
		t.Fatalf("%d restarts happened after the node went silent", after-before)
	}
	// Counted unavailable: with a budget of 1 a roll of the group is blocked.
	var plan schema.RollPlan
	if err := f.cluster(schema.OpRollPlan, map[string]any{"selector": map[string]any{"group": "default"}}, &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.BlockedBy) == 0 {
		t.Fatal("a failed node did not count against the budget")
	}
	// Forgotten, it no longer counts.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.conn.RequestJSON(ctx, schema.ClusterNodeSubject("n09", "forget"), map[string]any{}, nil, &schema.ClusterNode{}); err != nil {
		t.Fatal(err)
	}
	if err := f.cluster(schema.OpRollPlan, map[string]any{"selector": map[string]any{"group": "default"}}, &plan); err != nil || len(plan.BlockedBy) != 0 {
		t.Fatalf("after forget: %+v %v", plan, err)
	}
}

func TestCircuitBreakerOpensAndResets(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	// Two of three nodes cannot run a worker at all: unplanned failures.
	for _, id := range []string{"n02", "n03"} {
		if _, err := kv.Put(ctx, id, []byte(`{"config_version":"bad","fail_start":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	f.startNodes(1)
	f.startNodeNoWait("n02", 1)
	f.startNodeNoWait("n03", 2)
	f.startCoordinator("c1")
	var h schema.ClusterHealth
	f.waitFor(20*time.Second, "the breaker to open", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.CircuitBreaker.Open
	})
	if !strings.Contains(h.CircuitBreaker.Reason, "2 of 3") || len(f.alerts(schema.SeverityCritical, "circuit_breaker_open")) == 0 {
		t.Fatalf("breaker %+v, or no circuit_breaker_open alert", h.CircuitBreaker)
	}
	// While it is open, no roll starts (and the ladder makes no restart).
	err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"}}, &schema.RollStatus{})
	var se *schema.Error
	if !errors.As(err, &se) || se.Code != schema.CodeSystemNotReady {
		t.Fatalf("roll with the breaker open: %v", err)
	}
	if err := f.cluster(schema.OpBreakerReset, map[string]any{}, &schema.BreakerState{}); err != nil {
		t.Fatal(err)
	}
	if err := f.cluster(schema.OpClusterHealth, map[string]any{}, &h); err != nil {
		t.Fatal(err)
	}
	// Reset by hand it closes; the failures are still there, so it opens again.
	f.waitFor(20*time.Second, "the breaker to open again", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.CircuitBreaker.Open
	})
	if n := len(f.alerts(schema.SeverityInfo, "circuit_breaker_closed")); n == 0 {
		t.Fatal("the reset was not recorded")
	}
}

func TestMaintenanceDueWhenANodeRunsAnOlderConfiguration(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(2)
	c1 := f.startCoordinator("c1")
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if _, err := kv.Put(ctx, "group.default", []byte(`{"config_version":"2026-12"}`)); err != nil {
		t.Fatal(err)
	}
	f.waitFor(45*time.Second, "maintenance_due for both nodes", func() bool {
		return len(f.alerts(schema.SeverityInfo, "maintenance_due")) == 2
	})
	// Once they run it, nothing more is due.
	for _, id := range []string{"n01", "n02"} {
		var r schema.RestartResult
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		if err := f.conn.RequestJSON(rctx, schema.NodeSubject(id, schema.OpRestart), map[string]any{"reason": "configuration_update"}, nil, &r); err != nil || r.State.ConfigVersion != "2026-12" {
			t.Fatalf("%s: %+v %v", id, r.State, err)
		}
	}
	time.Sleep(time.Second)
	if n := len(f.alerts(schema.SeverityInfo, "maintenance_due")); n != 2 {
		t.Fatalf("%d maintenance_due alerts, want 2", n)
	}
}

func TestAbortedRollSeesItsNodeThroughAndStartsNoMore(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(4)
	c1 := f.startCoordinator("c1")
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"}, "min_healthy_time": 1}, &st); err != nil {
		t.Fatal(err)
	}
	f.waitFor(20*time.Second, "a node out", func() bool { return len(f.rollStatus(st.RollID).Current) == 1 })
	if err := f.cluster(schema.OpRollAbort, map[string]any{"roll_id": st.RollID}, &st); err != nil {
		t.Fatal(err)
	}
	f.waitFor(20*time.Second, "the node out to be seen through", func() bool {
		s := f.rollStatus(st.RollID)
		return s.State == schema.RollAborted && len(s.Current) == 0 && s.Done == 1
	})
	time.Sleep(time.Second)
	if s := f.rollStatus(st.RollID); s.Done != 1 || len(rollResults(f.restartResults(), st.RollID)) != 1 {
		t.Fatalf("an aborted roll went on: %+v", s)
	}
}

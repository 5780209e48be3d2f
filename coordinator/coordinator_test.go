package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/chaos"
	"github.com/restartcoord/restartcoord/coordinator"
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
	cfg := f.coordConfig("c1")
	cfg.UnhealthyAlertAfter = 3 * time.Second
	c1 := f.startCoordinatorWith(cfg)
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
	// Answering but never healthy: health_check_failed (after 3 s), then
	// degraded and quarantined by the ladder.
	if a := awaitAlert(t, f, schema.AlertHealthCheckFailed, "n02", firing, 1); a.Details["reason"] != coordinator.HealthUnhealthy {
		t.Fatalf("health_check_failed of n02 answering unhealthy: %+v", a)
	}
	awaitAlert(t, f, schema.AlertDegraded, "n02", firing, 1)
	awaitAlert(t, f, schema.AlertQuarantine, "n02", firing, 1)
	// The roll does not hang: n02 uses up the budget of 1 and will not recover by itself.
	f.waitFor(10*time.Second, "the roll to pause", func() bool { return f.rollStatus(st.RollID).State == schema.RollPaused })
	s := f.rollStatus(st.RollID)
	if s.Done != 0 || !strings.Contains(s.Message, "n02") {
		t.Fatalf("paused roll %+v", s)
	}
	// A node that stays failed keeps the roll paused (no automatic resume
	// of a quarantined node) and the pause was alerted, naming the node.
	if s.PausedReason != schema.PausedNodeFailed && s.PausedReason != schema.PausedQuarantine {
		t.Fatalf("paused roll: paused_reason %q, want node_failed or quarantine", s.PausedReason)
	}
	if a := awaitAlert(t, f, schema.AlertRollPaused, "n02", firing, 1); a.Details["roll_id"] != st.RollID {
		t.Fatalf("roll_paused naming n02: %+v", a)
	}
	time.Sleep(time.Second) // several passes: still paused, not resumed by itself
	if s = f.rollStatus(st.RollID); s.State != schema.RollPaused || s.AutoResumes != 0 {
		t.Fatalf("roll of a node that stays failed: state %s auto_resumes %d, want paused, 0", s.State, s.AutoResumes)
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
	// Released and healthy: what it raised is resolved, each raised once.
	for _, kind := range []string{schema.AlertHealthCheckFailed, schema.AlertDegraded, schema.AlertQuarantine} {
		awaitAlert(t, f, kind, "n02", resolved, 1)
		wantAlerts(t, f, kind, "n02", firing, 1)
	}
	if err := f.cluster(schema.OpRollResume, map[string]any{"roll_id": st.RollID}, &s); err != nil {
		t.Fatal(err)
	}
	awaitAlert(t, f, schema.AlertRollPaused, "n02", resolved, 1) // resumed
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
	if a := awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", firing, 1); a.Details["reason"] != coordinator.HealthDeclaredFailed {
		t.Fatalf("health_check_failed of n09: %+v", a)
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
	// No longer watched, its alert is resolved, having fired once.
	if a := awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", resolved, 1); a.Details["reason"] != "node_gone" {
		t.Fatalf("health_check_failed of n09 forgotten: %+v", a)
	}
	wantAlerts(t, f, schema.AlertHealthCheckFailed, "n09", firing, 1)
}

// startTwoOfThreeFailing starts n01 and, configured so that they cannot
// run a worker at all (unplanned failures), n02 and n03.
func (f *fleet) startTwoOfThreeFailing(ctx context.Context) {
	f.t.Helper()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	for _, id := range []string{"n02", "n03"} {
		if _, err := kv.Put(ctx, id, []byte(`{"config_version":"bad","fail_start":true}`)); err != nil {
			f.t.Fatal(err)
		}
	}
	f.startNodes(1)
	f.startNodeNoWait("n02", 1)
	f.startNodeNoWait("n03", 2)
}

func TestCircuitBreakerOpensAndResets(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.startTwoOfThreeFailing(ctx)
	f.startCoordinator("c1")
	var h schema.ClusterHealth
	f.waitFor(20*time.Second, "the breaker to open", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.CircuitBreaker.Open
	})
	// 2 of 3, or 2 of 2 when the first pass has not heard n01 yet (a node
	// not heard from is not counted until the coordinator is warm).
	if r := h.CircuitBreaker.Reason; !strings.Contains(r, "2 of 3") && !strings.Contains(r, "2 of 2") {
		t.Fatalf("breaker %+v", h.CircuitBreaker)
	}
	// The alert is stored just after the breaker opens in memory; it
	// names the nodes it counted, and why.
	details := awaitAlert(t, f, schema.AlertBreakerOpen, "", firing, 1).Details
	counted, _ := details["nodes"].(map[string]any)
	if len(counted) != 2 || counted["n02"] == nil || counted["n03"] == nil {
		t.Fatalf("alert details %v: want n02 and n03 counted", details)
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
	awaitAlert(t, f, schema.AlertBreakerClosed, "", firing, 1) // the reset, recorded
	// The reset closed the episode, and the reopening is a new one.
	awaitAlert(t, f, schema.AlertBreakerOpen, "", resolved, 1)
	awaitAlert(t, f, schema.AlertBreakerOpen, "", firing, 2)
	// Reset after reset, each racing the pass that opens it again: what
	// cluster health shows (the stored state) follows the breaker every
	// time (a CI rehearsal found it stuck at "closed" while the breaker was
	// open: the reset's write landed after the reopening's).
	for i := range 20 {
		if err := f.cluster(schema.OpBreakerReset, map[string]any{}, &schema.BreakerState{}); err != nil {
			t.Fatal(err)
		}
		f.waitFor(10*time.Second, fmt.Sprintf("the breaker shown open again after reset %d", i+2), func() bool {
			return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.CircuitBreaker.Open
		})
	}
}

func TestMaintenanceDueWhenANodeRunsAnOlderConfiguration(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(2)
	cfg := f.coordConfig("c1")
	cfg.MaintenanceEvery = 250 * time.Millisecond
	c1 := f.startCoordinatorWith(cfg)
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if _, err := kv.Put(ctx, "group.default", []byte(`{"config_version":"2026-12"}`)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"n01", "n02"} {
		if a := awaitAlert(t, f, schema.AlertMaintenanceDue, id, firing, 1); a.Details["stored"] != "2026-12" {
			t.Fatalf("maintenance_due of %s: %+v", id, a)
		}
	}
	// Once they run it, nothing more is due: resolved, raised once.
	for _, id := range []string{"n01", "n02"} {
		var r schema.RestartResult
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		if err := f.conn.RequestJSON(rctx, schema.NodeSubject(id, schema.OpRestart), map[string]any{"reason": "configuration_update"}, nil, &r); err != nil || r.State.ConfigVersion != "2026-12" {
			t.Fatalf("%s: %+v %v", id, r.State, err)
		}
	}
	for _, id := range []string{"n01", "n02"} {
		awaitAlert(t, f, schema.AlertMaintenanceDue, id, resolved, 1)
		wantAlerts(t, f, schema.AlertMaintenanceDue, id, firing, 1)
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

// A node declared failed is often being restarted by systemd or Docker: a
// roll waits for it for its healthy_deadline, and pauses only after that
// (found by the chaos suite: a roll started while a killed node was coming
// back paused at once and never went on).
func TestRollWaitsForAFailedNodeToRejoin(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(2)
	cmd := f.startNodeProcess("n09", 9)
	f.startCoordinator("c1")
	f.waitFor(10*time.Second, "n09 in view", func() bool { return f.nodes()["n09"].Healthy })
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	f.waitFor(10*time.Second, "n09 declared failed", func() bool { return f.nodes()["n09"].Failed })

	// A short healthy_deadline: n09 stays away past it, the roll pauses and says why.
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"min_healthy_time": 0.1, "healthy_deadline": 2}, &st); err != nil {
		t.Fatal(err)
	}
	f.waitFor(15*time.Second, "the roll to pause", func() bool { return f.rollStatus(st.RollID).State == schema.RollPaused })
	if s := f.rollStatus(st.RollID); !strings.Contains(s.Message, "n09") {
		t.Fatalf("paused roll %+v", s)
	}
	if err := f.cluster(schema.OpRollAbort, map[string]any{"roll_id": st.RollID}, &st); err != nil {
		t.Fatal(err)
	}

	// A long one: the roll waits, n09 comes back, the roll finishes.
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"min_healthy_time": 0.1, "healthy_deadline": 60}, &st); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if s := f.rollStatus(st.RollID); s.State != schema.RollRunning {
		t.Fatalf("roll %s while n09 may still come back: %+v", s.State, s)
	}
	f.startNodeProcess("n09", 9)
	f.waitRoll(st.RollID, 90*time.Second)
}

// The breaker's opening alert is kept even when ORCH_ALERTS does not answer
// at the moment it opens (here: the stream is full and refuses every
// publish for a while, as it answers none during an election): the coordinator tries again in the
// background, and the alert is stored (once) when the stream is back.
func TestBreakerAlertKeptThroughAnAlertsOutage(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	js := f.bs.JetStream()
	f.startTwoOfThreeFailing(ctx)
	// ORCH_ALERTS full, taking no new message: every publish is refused.
	st, err := js.Stream(ctx, schema.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	full := cfg
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	// The filler makes sure it holds one message; a node's own alert may have
	// got there first, and then the filler is refused, which is the point.
	filler := func() error {
		_, err := js.Publish(ctx, schema.AlertSubject(schema.SeverityInfo, "test_filler"), []byte(`{}`))
		return err
	}
	if err := filler(); err != nil && !isMaxMsgs(err) {
		t.Fatal(err)
	}
	if err := filler(); !isMaxMsgs(err) {
		t.Fatalf("ORCH_ALERTS still takes messages: %v", err)
	}
	f.startCoordinator("c1")
	var h schema.ClusterHealth
	// Every alert's first try waits up to 5 s for the full stream, in order
	// with the pass that raised it: restart_frequency alerts raised by the
	// ladder before the breaker opens each hold it up that long (a loaded
	// CI rehearsal saw two, and the breaker opened 21 s in).
	f.waitFor(45*time.Second, "the breaker to open", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.CircuitBreaker.Open
	})
	time.Sleep(6 * time.Second) // past the first try, which cannot be acknowledged
	if n := len(f.alerts(schema.SeverityCritical, "circuit_breaker_open")); n != 0 {
		t.Fatalf("%d circuit_breaker_open alerts stored while the stream took none", n)
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	f.waitFor(20*time.Second, "the circuit_breaker_open alert stored", func() bool {
		return len(f.alerts(schema.SeverityCritical, "circuit_breaker_open")) > 0
	})
	time.Sleep(3 * time.Second) // any second copy would land by now
	// The breaker may have closed and opened again meanwhile (a new alert),
	// but no alert is stored twice.
	seen := map[string]bool{}
	for _, a := range f.alerts(schema.SeverityCritical, "circuit_breaker_open") {
		id := fmt.Sprint(a["alert_id"])
		if seen[id] {
			t.Fatalf("alert %s stored twice", id)
		}
		seen[id] = true
	}
}

// A coordinator started while JetStream has no quorum (two of three servers
// down) starts once they are back, instead of exiting on "JetStream system
// temporarily unavailable" (found by the chaos suite: a coordinator
// restarted during an election exited and needed its supervisor).
func TestCoordinatorStartRidesAJetStreamOutage(t *testing.T) {
	f := newFleet(t, true)
	f.cl.StopServer(1)
	f.cl.StopServer(2)
	back := make(chan struct{})
	go func() {
		defer close(back)
		time.Sleep(3 * time.Second)
		for _, i := range []int{1, 2} {
			if err := f.cl.Start(i); err != nil {
				t.Error(err)
			}
		}
	}()
	f.startCoordinator("c1") // fails the test if Run returns
	<-back
	var h schema.ClusterHealth
	f.waitFor(20*time.Second, "cluster health from the coordinator", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.Leader == "c1"
	})
}

// A leader cut off from NATS (its server black-holed, as a partition does)
// misses every heartbeat and health answer: that says nothing about the
// nodes, so it declares none failed and does not open the breaker; once it
// hears the fleet again it judges as before (found by the chaos suite: a
// leader behind a partitioned server saw 5 of 5 nodes unhealthy).
func TestCutOffLeaderJudgesNoNode(t *testing.T) {
	f := newFleet(t, true)
	f.startNodes(3)
	target := strings.TrimPrefix(f.cl.Servers[0].URL(), "nats://")
	px, err := chaos.NewProxy("c1-nats", "127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	cfg := f.coordConfig("c1")
	cfg.NATS.URL = "nats://" + px.Addr()
	// The default lease: a cut-off leader keeps its office (by its own
	// clock) for up to 6 s, long past the 0.8 s in which it hears nothing.
	cfg.LeaseTTL, cfg.LeaseMargin = 8*time.Second, 2*time.Second
	f.startCoordinatorWith(cfg)
	var h schema.ClusterHealth
	f.waitFor(20*time.Second, "c1 leading 3 healthy nodes", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.Leader == "c1" && h.NodesHealthy == 3
	})
	px.Blackhole()
	t.Logf("c1's server black-holed at %s", time.Now().UTC().Format("15:04:05.000"))
	time.Sleep(5 * time.Second) // past 3 missed heartbeats and the ping timeout: c1 reconnects elsewhere
	px.Heal()
	var herr error
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		herr = f.cluster(schema.OpClusterHealth, map[string]any{}, &h)
		if herr == nil && h.Leader == "c1" && h.NodesHealthy == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("c1 not leading 3 healthy nodes 40 s after the heal: %v %+v", herr, h)
		}
	}
	time.Sleep(2 * time.Second) // alerts from the blind time would be stored by now
	if h.CircuitBreaker.Open {
		t.Errorf("breaker open after a leader could not hear the fleet")
	}
	wantNoAlerts(t, f, schema.AlertBreakerOpen)       // by a leader that could not hear the fleet
	wantNoAlerts(t, f, schema.AlertHealthCheckFailed) // nodes declared failed by a leader that could not hear them
}

// isMaxMsgs: a publish refused because its stream is full (DiscardNew).
func isMaxMsgs(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages exceeded")
}

// Nodes cut off from NATS for a moment (their server partitioned until
// they move to another) fall silent together; the breaker waits that out
// for the unhealthy grace, as the ladder does, instead of opening on a
// blip (found by the chaos suite: a NATS server partitioned for 7 s
// silenced 3 of 5 nodes and the breaker opened 3 s later).
func TestShortCutOffOfMostNodesOpensNoBreaker(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(1)
	px, err := chaos.NewProxy("n02-n03-nats", "127.0.0.1:0", strings.TrimPrefix(f.url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	for i, id := range []string{"n02", "n03"} {
		cfg := f.nodeConfig(id, i+1)
		cfg.NATS.URL = "nats://" + px.Addr()
		f.runNode(cfg).awaitReady(t)
	}
	cfg := f.coordConfig("c1")
	cfg.UnhealthyGrace = 3 * time.Second // the default
	f.startCoordinatorWith(cfg)
	var h schema.ClusterHealth
	f.waitFor(20*time.Second, "c1 leading 3 healthy nodes", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.Leader == "c1" && h.NodesHealthy == 3
	})
	// 1.5 s: past the 0.8 s in which three heartbeats are missed, well
	// short of that plus the 3 s grace.
	px.Blackhole()
	time.Sleep(1500 * time.Millisecond)
	px.Heal()
	f.waitFor(20*time.Second, "3 healthy nodes again", func() bool {
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.NodesHealthy == 3
	})
	time.Sleep(2 * time.Second) // an alert from the cut-off would be stored by now
	if h.CircuitBreaker.Open {
		t.Fatal("breaker open after a 1.5 s cut-off")
	}
	wantNoAlerts(t, f, schema.AlertBreakerOpen)
}

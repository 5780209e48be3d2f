package coordinator_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

// startRollWithAFailingNode starts three nodes and a leader, then a roll to
// configuration v2 in which n02's v2 makes its worker fail at start: its
// roll restart fails once, the node rolls back to the configuration it
// served with (healthy again), and the roll pauses for node_failed. It
// returns the roll's status once paused. fix() gives n02 a v2 that works.
func (f *fleet) startRollWithAFailingNode(ctx context.Context, minHealthy float64) (st schema.RollStatus, fix func()) {
	f.t.Helper()
	f.startNodes(3)
	c1 := f.startCoordinator("c1")
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	put := func(key, value string) {
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			f.t.Fatal(err)
		}
	}
	put("group.default", `{"config_version":"v2"}`)
	put("n02", `{"config_version":"v2","fail_start":true}`)
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"config_version": "v2", "min_healthy_time": minHealthy, "healthy_deadline": 20}, &st); err != nil {
		f.t.Fatal(err)
	}
	f.waitFor(30*time.Second, "the roll to pause on n02", func() bool {
		st = f.rollStatus(st.RollID)
		return st.State == schema.RollPaused
	})
	if st.PausedReason != schema.PausedNodeFailed || st.PausedSince == nil || len(st.Failed) != 1 || st.Failed[0] != "n02" {
		f.t.Fatalf("paused roll: got reason %q since %v failed %v, want node_failed on n02 (%+v)", st.PausedReason, st.PausedSince, st.Failed, st)
	}
	return st, func() { put("n02", `{"config_version":"v2"}`) }
}

// A roll whose node fails its restart once and then recovers finishes
// without an operator: the roll resumes by itself once the node has been
// healthy for min_healthy_time, retries it, and says so (auto_resumes), and
// the pause raised a roll_paused warning naming the node.
func TestRollResumesByItselfOnceItsFailedNodeRecovers(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, fix := f.startRollWithAFailingNode(ctx, 0.5)
	fix()
	f.waitRoll(st.RollID, 30*time.Second)
	done := f.rollStatus(st.RollID)
	if done.AutoResumes < 1 || done.PausedReason != "" {
		t.Fatalf("completed roll: auto_resumes %d paused_reason %q, want >= 1 and none", done.AutoResumes, done.PausedReason)
	}
	per := rollResults(f.restartResults(), st.RollID)
	if n := len(per["n02"]); n < 2 || per["n02"][0].Success || !per["n02"][n-1].Success {
		t.Fatalf("n02's roll restarts %+v: want a failed one, then a successful one", per["n02"])
	}
	a := awaitAlert(t, f, coordinator.AlertRollPaused, "n02", firing, 1)
	if d := a.Details; d["roll_id"] != st.RollID || d["reason"] != schema.PausedNodeFailed || d["node"] != "n02" {
		t.Fatalf("roll_paused alert for n02: %+v", a)
	}
	awaitAlert(t, f, coordinator.AlertRollPaused, "n02", resolved, 1) // resumed by itself
	wantAlerts(t, f, coordinator.AlertRollPaused, "n02", firing, 1)
}

// An operator's pause is never resumed automatically, even when it lands
// on a roll paused for a failed node that then recovers: all the automatic
// resume waits for is there, but the operator asked.
func TestOperatorPauseIsNeverResumedAutomatically(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, fix := f.startRollWithAFailingNode(ctx, 1)
	if err := f.cluster(schema.OpRollPause, map[string]any{"roll_id": st.RollID}, &st); err != nil {
		t.Fatal(err)
	}
	if st.PausedReason != schema.PausedOperator || st.AutoResumes != 0 {
		t.Fatalf("paused by the operator: reason %q auto_resumes %d", st.PausedReason, st.AutoResumes)
	}
	fix()
	f.waitFor(20*time.Second, "n02 healthy again", func() bool { return f.nodes()["n02"].Healthy })
	time.Sleep(3 * time.Second) // three times min_healthy_time: a node_failed pause resumes by now
	if s := f.rollStatus(st.RollID); s.State != schema.RollPaused || s.PausedReason != schema.PausedOperator || s.AutoResumes != 0 {
		t.Fatalf("an operator's pause: got %s reason %q auto_resumes %d", s.State, s.PausedReason, s.AutoResumes)
	}
	var resumed schema.RollStatus
	if err := f.cluster(schema.OpRollResume, map[string]any{"roll_id": st.RollID}, &resumed); err != nil {
		t.Fatal(err)
	}
	if resumed.State != schema.RollRunning || resumed.PausedReason != "" || resumed.PausedSince != nil {
		t.Fatalf("resumed: %s reason %q since %v, want running and no pause", resumed.State, resumed.PausedReason, resumed.PausedSince)
	}
	f.waitRoll(st.RollID, 30*time.Second)
}

// A roll start sent just after the leader is killed (the lease still names
// it) is held until the next leader leads, not refused with NOT_LEADER; two
// such starts with one roll_id (a caller repeating one whose answer it
// lost) make one roll, carried out once; a later start with that id
// returns the same roll.
func TestRollStartDuringALeaderChangeIsCarriedOutOnce(t *testing.T) {
	f := newFleet(t, false)
	ids := f.startNodes(3)
	c1 := f.startCoordinator("c1")
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	c2 := f.startCoordinator("c2")
	killed := time.Now()
	c1.Kill() // the lease names c1 for up to its TTL (3 s)
	// Once the server has dropped c1's subscriptions: a request routed to
	// a connection being closed is lost, which no coordinator can help.
	f.waitFor(5*time.Second, "c1 gone from the server", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := f.conn.Request(ctx, schema.CoordinatorSubject("c1", schema.OpRollPause), []byte(`{"roll_id":"none"}`), nil)
		return errors.Is(err, bus.ErrNoResponders)
	})
	const id = "roll-during-election"
	start := map[string]any{"selector": map[string]any{"group": "default"}, "roll_id": id, "min_healthy_time": 0.2}
	var sts [2]schema.RollStatus
	var errs [2]error
	var wg sync.WaitGroup
	for i := range sts {
		wg.Go(func() { errs[i] = f.cluster(schema.OpRollStart, start, &sts[i]) })
	}
	wg.Wait()
	t.Logf("starts answered %s after the leader was killed", time.Since(killed).Round(time.Millisecond))
	_, term := c2.IsLeader()
	for i := range sts {
		if errs[i] != nil || sts[i].RollID != id || !sts[i].StartedAt.Equal(sts[0].StartedAt) || sts[i].Term != term {
			t.Fatalf("start %d: %v, roll %q started %s term %d; want %s started %s by c2 (term %d)",
				i, errs[i], sts[i].RollID, sts[i].StartedAt, sts[i].Term, id, sts[0].StartedAt, term)
		}
	}
	f.waitRoll(id, 30*time.Second)
	per := rollResults(f.restartResults(), id)
	for _, n := range ids {
		if len(per[n]) != 1 {
			t.Fatalf("node %s restarted %d times by the roll, want once", n, len(per[n]))
		}
	}
	var again schema.RollStatus
	if err := f.cluster(schema.OpRollStart, start, &again); err != nil || again.RollID != id || again.State != schema.RollCompleted ||
		!again.StartedAt.Equal(sts[0].StartedAt) {
		t.Fatalf("start repeated: %v %+v, want roll %s as it is (completed)", err, again, id)
	}
	if n := f.rollCount(); n != 1 {
		t.Fatalf("%d rolls stored, want 1", n)
	}
}

// rollCount is how many rolls ORCH_COORD holds.
func (f *fleet) rollCount() int {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := f.bs.JetStream().KeyValue(ctx, schema.BucketCoord)
	if err != nil {
		f.t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for k := range keys.Keys() {
		if strings.HasPrefix(k, "roll.") {
			n++
		}
	}
	return n
}

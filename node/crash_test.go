package node_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

func TestFrozenWorkerIsKilledAndReplaced(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	e.startNode(cfg)
	c := e.client("c1", "n1")
	l := newLedger()
	createTasks(t, l, 50, 2, func(i int) schema.TaskCreateArgs { return schema.TaskCreateArgs{Title: "t"} }, c)
	pid := e.health("n1").WorkerPID
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var h schema.Health
	waitFor(t, 20*time.Second, "a new healthy worker", func() bool {
		h = e.health("n1")
		return h.Healthy && h.WorkerPID != pid && h.WorkerPID != 0
	})
	t.Logf("SIGSTOP to healthy new worker: %s (watchdog %s every %s)", time.Since(stopped).Round(time.Millisecond), cfg.WatchdogTimeout, cfg.WatchdogInterval)
	if pidAlive(pid) {
		t.Fatalf("frozen worker %d still exists", pid)
	}
	hist := e.history("n1")
	r := hist.RecentRestarts[0]
	if r.Reason != schema.ReasonCrashRecovery || !r.Success || r.OldPID != pid || !strings.Contains(strings.Join(r.Errors, " "), "watchdog") {
		t.Fatalf("history: %+v", r)
	}
	l.check(t, c)
}

func TestCrashedWorkerIsRestartedEachTime(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	seen := map[int]bool{}
	for i := range 3 {
		pid := e.health("n1").WorkerPID
		seen[pid] = true
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "recovery", func() bool {
			h := e.health("n1")
			return h.Healthy && !seen[h.WorkerPID]
		})
		_ = i
	}
	hist := e.history("n1")
	if hist.TotalRestarts != 3 {
		t.Fatalf("history has %d restarts, want 3 crash recoveries", hist.TotalRestarts)
	}
	for _, r := range hist.RecentRestarts {
		if r.Reason != schema.ReasonCrashRecovery || !r.Success || r.Graceful {
			t.Fatalf("history entry %+v", r)
		}
	}
}

func TestSecondNodeWithSameIDRefusesToStart(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	sup, err := node.NewSupervisor(e.fastConfig("n1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = sup.Run(ctx, nil)
	if !errors.Is(err, node.ErrNodeIDTaken) {
		t.Fatalf("second node with the same id: got %v, want ErrNodeIDTaken", err)
	}
	if !e.health("n1").Healthy {
		t.Fatal("the first node suffered from the second's attempt")
	}
}

// TestSilentHolderThatRefreshesItsLeaseIsAlive: a holder of the node id
// whose heartbeats do not arrive but which refreshes its lease is alive, so
// a node waiting for that lease refuses to start, without waiting out the
// whole window (TTL plus start timeout) that a silent holder's lease gets.
func TestSilentHolderThatRefreshesItsLeaseIsAlive(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const other = "n1@elsewhere/1/00000000"
	l, err := bus.AcquireLease(ctx, e.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode("n1"), []byte(other), cfg.LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	refreshing, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for refreshing.Err() == nil {
			time.Sleep(500 * time.Millisecond)
			_ = l.Refresh(refreshing)
		}
	}()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = sup.Run(ctx, nil)
	if !errors.Is(err, node.ErrNodeIDTaken) || !strings.Contains(err.Error(), "lease moved") {
		t.Fatalf("Run returned %v, want ErrNodeIDTaken because the lease moved", err)
	}
}

func TestStopDrainsSnapshotsAndDeregisters(t *testing.T) {
	e := newEnv(t)
	sup, err := node.NewSupervisor(e.fastConfig("n1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, ready) }()
	<-ready
	c := e.client("c1", "n1")
	l := newLedger()
	createTasks(t, l, 20, 1, func(int) schema.TaskCreateArgs { return schema.TaskCreateArgs{Title: "t"} }, c)
	job, err := c.CreateTask(context.Background(), schema.TaskCreateArgs{Title: "job", Job: &schema.Job{Kind: "steps", Steps: 1000, StepSeconds: 0.01}})
	if err != nil {
		t.Fatal(err)
	}
	pid := e.health("n1").WorkerPID
	cancel() // what SIGTERM does in `restartcoord node`
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node did not stop")
	}
	if pidAlive(pid) {
		t.Fatalf("worker %d outlived its supervisor", pid)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	list, err := e.bs.ListSnapshots(ctx2, "n1")
	if err != nil || len(list) == 0 || list[0].Trigger != "shutdown" {
		t.Fatalf("newest snapshot %+v (%v), want one taken at shutdown", list, err)
	}
	kv, _ := e.bs.JetStream().KeyValue(ctx2, schema.BucketNodes)
	if _, err := kv.Get(ctx2, "n1"); err == nil {
		t.Fatal("node still registered after stop")
	}
	holder, err := busLeaseHolder(e, "n1")
	if err != nil || holder != "" {
		t.Fatalf("node id lease still held by %q (%v)", holder, err)
	}
	// The same id starts again at once, with the state and the job where they were.
	e.startNode(e.fastConfig("n1"))
	l.check(t, c)
	got, err := c.GetTask(context.Background(), job.TaskID)
	if err != nil || got.StepsDone == 0 || got.Status != schema.TaskActive {
		t.Fatalf("job after restart of the node: %+v (%v)", got, err)
	}
}

// A supervisor killed with -9 leaves its node-id lease behind; the next one
// (restarted by systemd or Docker) waits for it to expire instead of failing.
func TestNodeIDHeldBySilentHolderIsWaitedFor(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bus.AcquireLease(ctx, e.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode("n1"), []byte("dead@host/1/x"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	e.startNode(e.fastConfig("n1"))
	if waited := time.Since(t0); waited < time.Second {
		t.Fatalf("started after %s while a 2 s lease was held", waited)
	}
	if !e.health("n1").Healthy {
		t.Fatal("node not healthy after taking over the expired lease")
	}
}

// A lease that expired under a live node (its refreshes delayed by a slow
// NATS) and that nobody else took is taken again; the node keeps serving.
// TestNodeIDTakenByAnotherStopsTheNode: a supervisor whose lease expired
// and is now held by another instance kills its worker and Run returns
// ErrNodeIDTaken (so systemd or Docker see the node exit with a failure),
// leaving the other's lease and registry entry alone. Before, it killed the
// worker and stayed up answering unhealthy with no loop running, for ever.
func TestNodeIDTakenByAnotherStopsTheNode(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- sup.Run(runCtx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("n1 did not start: %v", err)
	}
	pid := e.health("n1").WorkerPID
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, _ := e.bs.JetStream().KeyValue(ctx, schema.BucketLeases)
	const other = "n1@elsewhere/1/00000000"
	if err := kv.Delete(ctx, schema.LeaseKeyNode("n1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, schema.LeaseKeyNode("n1"), []byte(other), jetstream.KeyTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, node.ErrNodeIDTaken) || !strings.Contains(err.Error(), other) {
			t.Fatalf("Run returned %v, want ErrNodeIDTaken naming %s", err, other)
		}
	case <-time.After(3 * cfg.LeaseTTL):
		t.Fatalf("Run did not return within %s of another instance taking the node id", 3*cfg.LeaseTTL)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("worker %d still there after the node id was lost: %v", pid, err)
	}
	if h, err := busLeaseHolder(e, "n1"); err != nil || h != other {
		t.Errorf("lease holder %q (%v) after n1 stopped, want %q left alone", h, err, other)
	}
	nodes, _ := e.bs.JetStream().KeyValue(ctx, schema.BucketNodes)
	if _, err := nodes.Get(ctx, "n1"); err != nil {
		t.Errorf("registry entry of n1 after it stopped: %v; the new holder's entry must be left alone", err)
	}
}

func TestExpiredNodeLeaseNobodyTookIsRetaken(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	pid := e.health("n1").WorkerPID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, _ := e.bs.JetStream().KeyValue(ctx, schema.BucketLeases)
	before, _ := busLeaseHolder(e, "n1")
	if err := kv.Delete(ctx, schema.LeaseKeyNode("n1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the lease to be taken again", func() bool {
		h, _ := busLeaseHolder(e, "n1")
		return h == before
	})
	if h := e.health("n1"); !h.Healthy || h.WorkerPID != pid {
		t.Fatalf("after the lease was retaken: healthy %v pid %d (was %d)", h.Healthy, h.WorkerPID, pid)
	}
}

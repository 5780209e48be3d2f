package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// createTasks creates n tasks through c (with `workers` concurrent callers)
// and records every acknowledged one.
func createTasks(t *testing.T, l *ledger, n, workers int, mk func(i int) schema.TaskCreateArgs, clients ...interface {
	CreateTask(context.Context, schema.TaskCreateArgs) (*schema.Task, error)
}) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for w := range workers {
		wg.Add(1)
		go func(c interface {
			CreateTask(context.Context, schema.TaskCreateArgs) (*schema.Task, error)
		}) {
			defer wg.Done()
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				task, err := c.CreateTask(ctx, mk(i))
				cancel()
				if err != nil {
					errc <- err
					return
				}
				l.ack(task)
			}
		}(clients[w%len(clients)])
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("create: %v", err)
	}
}

func TestGracefulRestartRestoresTenThousandTasks(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c1, c2 := e.client("c1", "n1"), e.client("c2", "n1")
	l := newLedger()
	n := 10000
	if testing.Short() {
		n = 1000
	}
	desc := string(make([]byte, 0))
	for range 20 {
		desc += "forty-two bytes of description per line. "
	}
	createTasks(t, l, n, 8, func(i int) schema.TaskCreateArgs {
		return schema.TaskCreateArgs{Title: fmt.Sprintf("task %d", i), Description: desc}
	}, c1, c2)
	before := e.health("n1")

	r := e.restart("n1", map[string]any{"reason": "manual_request"})
	if !r.Success || r.Phase != schema.PhaseComplete {
		t.Fatalf("restart failed: %+v", r)
	}
	if r.OldPID == r.NewPID || r.NewPID == 0 || r.OldPID != before.WorkerPID {
		t.Fatalf("pids: old %d new %d, health said %d", r.OldPID, r.NewPID, before.WorkerPID)
	}
	if pidAlive(r.OldPID) {
		t.Fatalf("old worker %d still alive", r.OldPID)
	}
	if r.State.TasksSaved != n || r.State.TasksRestored != n || !r.State.Preserved {
		t.Fatalf("state: %+v, want %d saved and restored", r.State, n)
	}
	if r.State.SizeBytes < int64(n)*800 {
		t.Fatalf("snapshot of %d tasks is only %d bytes", n, r.State.SizeBytes)
	}
	t.Logf("graceful restart of %d tasks (%d bytes): %.3fs", n, r.State.SizeBytes, r.Duration)
	l.check(t, c1)
	if h := e.health("n1"); !h.Healthy || h.WorkerPID != r.NewPID {
		t.Fatalf("after restart: healthy %v pid %d, want healthy pid %d", h.Healthy, h.WorkerPID, r.NewPID)
	}
}

func TestEmergencyRestartKeepsAcknowledgedState(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	l := newLedger()
	createTasks(t, l, 200, 4, func(i int) schema.TaskCreateArgs {
		return schema.TaskCreateArgs{Title: fmt.Sprintf("t%d", i)}
	}, c)
	r := e.restart("n1", map[string]any{"graceful": false, "preserve_state": false, "reason": "emergency_shutdown", "timeout": 15})
	if !r.Success || r.Graceful || r.State.SnapshotWritten || !r.State.Preserved {
		t.Fatalf("emergency restart: %+v", r)
	}
	if r.State.TasksRestored != 200 || r.State.JournalReplayed < 200 {
		t.Fatalf("restored %d tasks from %d journal entries, want 200 from >= 200", r.State.TasksRestored, r.State.JournalReplayed)
	}
	l.check(t, c)
}

func TestKillWorkerDuringConcurrentMutationsLosesNothing(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	const clients, per = 10, 100
	l := newLedger()
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	var acked sync.WaitGroup
	acked.Add(1)
	var once sync.Once
	var count int64
	var mu sync.Mutex
	for i := range clients {
		c := e.client(fmt.Sprintf("c%d", i), "n1")
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var task *schema.Task
			for j := range per {
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				var err error
				if j%2 == 0 || task == nil {
					task, err = c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("c%d-%d", i, j)})
				} else {
					p := float64(j)
					task, err = c.UpdateTask(ctx, schema.TaskUpdateArgs{TaskID: task.TaskID, Progress: &p})
				}
				cancel()
				if err != nil {
					errc <- fmt.Errorf("client %d call %d: %w", i, j, err)
					return
				}
				l.ack(task)
				mu.Lock()
				count++
				if count == clients*per/2 {
					once.Do(acked.Done)
				}
				mu.Unlock()
			}
		}(i)
	}
	acked.Wait()
	pid := e.health("n1").WorkerPID
	if err := syscallKill(pid, 9); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(l.tasks) != clients*per/2 {
		t.Fatalf("ledger has %d tasks, want %d", len(l.tasks), clients*per/2)
	}
	l.check(t, e.client("reader", "n1"))
	h := e.history("n1")
	found := false
	for _, r := range h.RecentRestarts {
		if r.Reason == schema.ReasonCrashRecovery && r.OldPID == pid && r.Success {
			found = true
		}
	}
	if !found {
		t.Fatalf("no successful crash_recovery of worker %d in history: %+v", pid, h.RecentRestarts)
	}
}

// jobSteps counts the job_step effects each (task, step) had, from the
// events stream: the job's real, external side effect.
func jobSteps(t *testing.T, e *env, nodeID string) map[string]map[int]int {
	t.Helper()
	out := map[string]map[int]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.bs.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject(nodeID, schema.EventJobStep), func(data []byte) error {
		var ev struct {
			TaskID string `json:"task_id"`
			Step   int    `json:"step"`
		}
		if err := jsonUnmarshal(data, &ev); err != nil {
			return err
		}
		if out[ev.TaskID] == nil {
			out[ev.TaskID] = map[int]int{}
		}
		out[ev.TaskID][ev.Step]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJobRunsEachStepOnceAcrossGracefulRestarts(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	ctx := context.Background()
	task, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: "job", Job: &schema.Job{Kind: "steps", Steps: 50, StepSeconds: 0.04}})
	if err != nil {
		t.Fatal(err)
	}
	pids := map[int]bool{}
	for i := range 5 {
		time.Sleep(250 * time.Millisecond)
		r := e.restart("n1", map[string]any{"reason": "rolling_restart"})
		if !r.Success {
			t.Fatalf("restart %d: %+v", i, r)
		}
		pids[r.NewPID] = true
	}
	if len(pids) != 5 {
		t.Fatalf("5 restarts gave %d distinct new pids", len(pids))
	}
	waitFor(t, 30*time.Second, "the job to complete", func() bool {
		got, err := c.GetTask(ctx, task.TaskID)
		return err == nil && got.Status == schema.TaskCompleted
	})
	got, _ := c.GetTask(ctx, task.TaskID)
	if got.StepsDone != 50 || got.Progress != 100 {
		t.Fatalf("job finished with steps_done %d progress %v", got.StepsDone, got.Progress)
	}
	steps := jobSteps(t, e, "n1")[task.TaskID]
	for s := 1; s <= 50; s++ {
		if steps[s] != 1 {
			t.Errorf("step %d ran %d times, want exactly once", s, steps[s])
		}
	}
	if len(steps) != 50 {
		t.Errorf("%d distinct steps ran, want 50", len(steps))
	}
}

// TestJobStepsWaitForTheWorkerToServe: a restart's new worker runs no job
// step before it serves (its restart_complete notice): one whose start
// failed after restoring (JetStream not answering while it took requests)
// had run steps that the next worker then ran again (found by the chaos
// suite).
func TestJobStepsWaitForTheWorkerToServe(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	ctx := context.Background()
	task, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: "job", Job: &schema.Job{Kind: "steps", Steps: 20000, StepSeconds: 0.001}})
	if err != nil {
		t.Fatal(err)
	}
	notices, err := e.conn.SubscribeSync(schema.NotifySubject("n1"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	r := e.restart("n1", map[string]any{"reason": "rolling_restart"})
	if !r.Success {
		t.Fatalf("restart: %+v", r)
	}
	var ready time.Time
	for ready.IsZero() {
		m, err := notices.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no restart_complete notice: %v", err)
		}
		var n schema.Notice
		if err := jsonUnmarshal(m.Data, &n); err != nil {
			t.Fatal(err)
		}
		if n.Event == schema.NoticeRestartComplete {
			ready = n.Timestamp
		}
	}
	var before, after int
	waitFor(t, 20*time.Second, "the new worker running steps", func() bool {
		before, after = 0, 0
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := e.bs.ReadSubject(rctx, schema.StreamEvents, schema.NodeEventSubject("n1", schema.EventJobStep), func(data []byte) error {
			var ev struct {
				TaskID    string    `json:"task_id"`
				PID       int       `json:"pid"`
				Timestamp time.Time `json:"timestamp"`
			}
			if err := jsonUnmarshal(data, &ev); err != nil {
				return err
			}
			switch {
			case ev.TaskID != task.TaskID || ev.PID != r.NewPID:
			case ev.Timestamp.Before(ready):
				before++
			default:
				after++
			}
			return nil
		})
		return err == nil && after > 0
	})
	if before > 0 {
		t.Errorf("the new worker ran %d steps before it served at %s (and %d after)", before, ready.Format(time.RFC3339Nano), after)
	}
}

func TestRestartDuringRestartIsRefused(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	// A job whose step outlasts the suspension timeout keeps the drain busy for ~1 s.
	if _, err := c.CreateTask(context.Background(), schema.TaskCreateArgs{Title: "slow", Job: &schema.Job{Kind: "steps", Steps: 3, StepSeconds: 5}}); err != nil {
		t.Fatal(err)
	}
	first := make(chan schema.RestartResult, 1)
	go func() { first <- e.restart("n1", map[string]any{"restart_id": "first"}) }()
	waitFor(t, 5*time.Second, "the first restart to start", func() bool {
		var st schema.RestartStatus
		return e.req("n1", schema.OpRestartStatus, nil, &st) == nil && st.CurrentStatus.RestartID == "first"
	})
	err := e.req("n1", schema.OpRestart, map[string]any{"restart_id": "second"}, &schema.RestartResult{})
	se := mustCode(t, err, schema.CodeRestartInProgress)
	if se.Details["restart_id"] != "first" {
		t.Fatalf("details %v, want restart_id first", se.Details)
	}
	if r := <-first; !r.Success {
		t.Fatalf("first restart: %+v", r)
	}
	if n := e.history("n1").TotalRestarts; n != 1 {
		t.Fatalf("history has %d restarts, want 1", n)
	}
}

func TestSameRestartIDRestartsOnce(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	var wg sync.WaitGroup
	results := make([]schema.RestartResult, 3)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = e.restart("n1", map[string]any{"restart_id": "once-1"})
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if !r.Success || r.RestartID != "once-1" || r.NewPID != results[0].NewPID {
			t.Fatalf("result %d: %+v vs %+v", i, r, results[0])
		}
	}
	again := e.restart("n1", map[string]any{"restart_id": "once-1"})
	if again.NewPID != results[0].NewPID || again.StartedAt != results[0].StartedAt {
		t.Fatalf("a later repeat restarted again: %+v", again)
	}
	if n := e.history("n1").TotalRestarts; n != 1 {
		t.Fatalf("history has %d restarts, want 1", n)
	}
}

// Maintenance mode holds new work: a request sent during a graceful restart
// waits in the buffer and is answered by the new worker, once.
func TestRequestDuringRestartWaitsAndIsAnsweredAfter(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	// A step longer than the suspension timeout keeps the drain busy ~1 s.
	if _, err := c.CreateTask(context.Background(), schema.TaskCreateArgs{Title: "slow", Job: &schema.Job{Kind: "steps", Steps: 2, StepSeconds: 5}}); err != nil {
		t.Fatal(err)
	}
	res := make(chan schema.RestartResult, 1)
	go func() { res <- e.restart("n1", map[string]any{}) }()
	waitFor(t, 5*time.Second, "maintenance mode", func() bool {
		var st schema.RestartStatus
		return e.req("n1", schema.OpRestartStatus, nil, &st) == nil && st.CurrentStatus.MaintenanceMode
	})
	sent := time.Now()
	task, err := c.CreateTask(context.Background(), schema.TaskCreateArgs{Title: "sent during the restart"})
	if err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	r := <-res
	if !r.Success || r.BufferedRequestsReplayed < 1 {
		t.Fatalf("restart: success %v, buffered requests replayed %d", r.Success, r.BufferedRequestsReplayed)
	}
	if answered.Before(r.CompletedAt.Add(-50 * time.Millisecond)) {
		t.Fatalf("request answered at %s, before the restart completed at %s: maintenance did not hold it", answered, r.CompletedAt)
	}
	t.Logf("request waited %s in the buffer", answered.Sub(sent).Round(time.Millisecond))
	all, err := c.AllTasks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, x := range all {
		if x.Title == "sent during the restart" {
			n++
			if !x.Equal(task) {
				t.Fatalf("task %+v, acknowledged %+v", x, task)
			}
		}
	}
	if n != 1 {
		t.Fatalf("the request was applied %d times", n)
	}
}

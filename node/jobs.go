package node

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// jobRunner runs job tasks step by step with a checkpoint after each step.
// A step's effect (a job_step event) and its checkpoint are made together,
// never split by a graceful stop: suspension waits for a step boundary, or
// abandons a step before its effect if the boundary is too far away.
type jobRunner struct {
	w *worker

	mu       sync.Mutex
	stopping chan struct{} // closed: finish the current step, then stop
	hard     context.CancelFunc
	ctx      context.Context
	wg       sync.WaitGroup
	active   map[string]bool
	// ends: when each job's step in flight ends (shutdown.prepare says
	// whether a drain would wait for them or abandon them).
	ends map[string]time.Time
}

// stepEnds copies when each running job's current step ends.
func (j *jobRunner) stepEnds() map[string]time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.ends) == 0 {
		return nil
	}
	out := make(map[string]time.Time, len(j.ends))
	for id, t := range j.ends {
		out[id] = t
	}
	return out
}

func (j *jobRunner) stepStarted(id string, end time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if end.IsZero() {
		delete(j.ends, id)
		return
	}
	if j.ends == nil {
		j.ends = map[string]time.Time{}
	}
	j.ends[id] = end
}

func (j *jobRunner) running() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.active)
}

// start runs task id's job if it is not running yet.
func (j *jobRunner) start(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.active == nil {
		j.active = map[string]bool{}
	}
	if j.active[id] {
		return
	}
	if j.stopping == nil {
		var ctx context.Context
		ctx, j.hard = context.WithCancel(context.Background())
		j.stopping = make(chan struct{})
		j.ctx = ctx
	}
	j.active[id] = true
	j.wg.Add(1)
	go j.run(j.ctx, j.stopping, id)
}

func (j *jobRunner) run(ctx context.Context, stopping chan struct{}, id string) {
	defer j.wg.Done()
	defer func() {
		j.mu.Lock()
		delete(j.active, id)
		delete(j.ends, id)
		j.mu.Unlock()
	}()
	st := j.w.st
	for {
		st.mu.Lock()
		t, ok := st.tasks[id]
		if !ok || t.Job == nil || t.Status != schema.TaskActive || t.StepsDone >= t.Job.Steps {
			st.mu.Unlock()
			return
		}
		step := t.StepsDone + 1
		dur := schema.Seconds(t.Job.StepSeconds)
		st.mu.Unlock()

		select {
		case <-stopping:
			return // at a step boundary
		default:
		}
		timer := time.NewTimer(dur)
		j.stepStarted(id, time.Now().Add(dur))
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return // abandoned before its effect: it will run after the restart
		}
		if err := j.step(id, step); err != nil {
			j.w.log.Error("job step failed", "task", id, "step", step, "err", err)
			return
		}
	}
}

// step makes step n's effect and its checkpoint.
func (j *jobRunner) step(id string, n int) error {
	w := j.w
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := stateNow()
	ev := map[string]any{"type": schema.TypeJobStep, "node_id": w.env.NodeID, "task_id": id, "step": n,
		"pid": os.Getpid(), "timestamp": now}
	// The effect's idempotency key is its node, task and step: a try that
	// landed unacknowledged and is tried again, or the step run again in
	// this worker after its effect timed out (the job resumes when a drain
	// is undone; found by a 10-minute chaos run), is stored once.
	key := fmt.Sprintf("%s:jobstep:%s:%d", w.env.NodeID, id, n)
	if err := retryJournal(ctx, func() error {
		return w.bs.PublishDurableOnce(ctx, schema.NodeEventSubject(w.env.NodeID, schema.EventJobStep), key, ev)
	}); err != nil {
		return fmt.Errorf("job step effect: %w", err)
	}
	w.st.commitMu.Lock()
	defer w.st.commitMu.Unlock()
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	t, ok := w.st.tasks[id]
	if !ok || t.Status != schema.TaskActive {
		return nil
	}
	nt := *t
	nt.StepsDone = n
	nt.Progress = float64(n) * 100 / float64(nt.Job.Steps)
	nt.Checkpoint = mustJSON(map[string]int{"step": n})
	nt.UpdatedAt = now
	if n >= nt.Job.Steps {
		nt.Status = schema.TaskCompleted
		nt.Result = mustJSON(map[string]int{"steps": n})
	}
	return w.st.commitLocked(ctx, fmt.Sprintf("%s:step:%s:%d", w.env.NodeID, id, n),
		&schema.JournalEntry{At: now, Op: schema.JournalJobStep, Task: &nt})
}

// suspendAll stops every job at a step boundary (waiting up to timeout for
// the step in flight), then journals each unfinished job as suspended.
func (j *jobRunner) suspendAll(ctx context.Context, timeout time.Duration) (int, error) {
	j.mu.Lock()
	stopping, hard := j.stopping, j.hard
	j.stopping, j.hard, j.ctx = nil, nil, nil
	j.mu.Unlock()
	if stopping != nil {
		close(stopping)
		done := make(chan struct{})
		go func() { j.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(timeout):
			hard() // abandon steps that cannot finish in time, before their effect
			<-done
		}
		hard()
	}
	w := j.w
	w.st.commitMu.Lock()
	defer w.st.commitMu.Unlock()
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	ids := make([]string, 0)
	for id, t := range w.st.tasks {
		if t.Job != nil && t.Status == schema.TaskActive {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	now := stateNow()
	for _, id := range ids {
		nt := *w.st.tasks[id]
		nt.Status, nt.UpdatedAt = schema.TaskSuspended, now
		if err := w.st.commitLocked(ctx, "", &schema.JournalEntry{At: now, Op: schema.JournalJobSuspend, Task: &nt}); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// resumeAll journals every suspended job as active again and returns the
// unfinished jobs, for startAll to run from their checkpoints once the
// worker serves: a worker whose start fails after this point (JetStream
// not answering, exit 75) must not have run a step, or the next worker
// runs it again (found by the chaos suite: a roll's new worker ran step 11
// of a job during a NATS partition, then failed to take requests).
func (j *jobRunner) resumeAll(ctx context.Context) ([]string, error) {
	w := j.w
	var ids []string
	w.st.commitMu.Lock()
	w.st.mu.Lock()
	now := stateNow()
	for id, t := range w.st.tasks {
		if t.Job == nil || t.StepsDone >= t.Job.Steps {
			continue
		}
		switch t.Status {
		case schema.TaskSuspended:
			nt := *t
			nt.Status, nt.UpdatedAt = schema.TaskActive, now
			if err := w.st.commitLocked(ctx, "", &schema.JournalEntry{At: now, Op: schema.JournalJobResume, Task: &nt}); err != nil {
				w.st.mu.Unlock()
				w.st.commitMu.Unlock()
				return nil, err
			}
			ids = append(ids, id)
		case schema.TaskActive:
			ids = append(ids, id)
		}
	}
	w.st.mu.Unlock()
	w.st.commitMu.Unlock()
	return ids, nil
}

// startAll runs the jobs resumeAll returned.
func (j *jobRunner) startAll(ids []string) {
	for _, id := range ids {
		j.start(id)
	}
}

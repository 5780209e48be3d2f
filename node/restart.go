package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/schema"
)

// restartOp is one restart, from request to result.
type restartOp struct {
	req     schema.RestartRequest
	restore string // snapshot id to roll back to (state.restore)
	trigger string // snapshot trigger of the drain
	res     schema.RestartResult
	started time.Time
	expect  time.Duration
	done    chan struct{}
	// archived is the snapshot the drain wrote (state.restore's archive).
	archived *schema.SnapshotInfo
	// phase and phaseAt: the phase it is in and since when (for the
	// phase duration histogram); held: Supervisor.mu.
	phase   schema.Phase
	phaseAt time.Time
}

// ErrRestartInProgress is the sentinel behind RESTART_IN_PROGRESS.
var ErrRestartInProgress = errors.New("node: restart in progress")

// Restart runs a restart (or joins the one with the same restart_id) and
// returns its result. fence is the caller's fencing token (0: an operator).
// Leaving early (ctx) does not cancel the restart.
func (s *Supervisor) Restart(ctx context.Context, req schema.RestartRequest, fence uint64) (*schema.RestartResult, error) {
	op, err := s.begin(req, fence, "", "")
	if err != nil {
		return nil, err
	}
	select {
	case <-op.done:
		r := op.res
		return &r, nil
	case <-ctx.Done():
		return nil, schema.Errorf(schema.CodeTimeoutExceeded, "stopped waiting; restart %s goes on (ask restart.status)", op.res.RestartID)
	}
}

// begin admits a restart: same restart_id joins, one at a time, fencing.
func (s *Supervisor) begin(req schema.RestartRequest, fence uint64, restore, trigger string) (*restartOp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.RestartID != "" {
		if op, ok := s.ops[req.RestartID]; ok {
			return op, nil
		}
		if r, ok := s.hist.byID(req.RestartID); ok {
			op := &restartOp{res: r, done: make(chan struct{})}
			close(op.done)
			return op, nil
		}
	}
	if fence != 0 {
		if fence < s.fence {
			return nil, schema.Errorf(schema.CodeStaleFencingToken, "fencing token %d is older than %d, the newest this node has seen", fence, s.fence).
				WithDetail("highest_seen", s.fence)
		}
		s.fence = fence
	}
	if s.cur != nil {
		return nil, schema.Errorf(schema.CodeRestartInProgress, "restart %s is in progress (%s)", s.cur.res.RestartID, s.phase).
			WithDetail("restart_id", s.cur.res.RestartID)
	}
	if s.ctx.Err() != nil {
		return nil, schema.Errorf(schema.CodeSystemNotReady, "node is stopping")
	}
	if req.RestartID == "" {
		req.RestartID = uuid.NewString()
	}
	op := &restartOp{req: req, restore: restore, trigger: trigger, started: time.Now(), done: make(chan struct{}),
		expect: s.hist.expectedDuration()}
	op.phase, op.phaseAt = schema.PhasePreparing, op.started
	op.res = schema.RestartResult{Type: schema.TypeRestartResult, RestartID: req.RestartID, NodeID: s.cfg.NodeID,
		Graceful: req.Graceful, PreserveState: req.PreserveState, Timeout: req.Timeout, Reason: req.Reason,
		StartedAt: op.started.UTC(), Errors: []string{}, FencingToken: fence}
	s.cur = op
	s.ops[req.RestartID] = op
	if len(s.ops) > 1000 {
		for id, o := range s.ops {
			if o != op && isClosed(o.done) {
				delete(s.ops, id)
			}
		}
	}
	if fence != 0 {
		go func() { _ = s.register(context.Background()) }()
	}
	s.phase, s.phaseMsg = schema.PhasePreparing, "restart "+req.RestartID
	go s.execute(op)
	return op, nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// setPhase moves the running restart to phase p and publishes the event.
func (s *Supervisor) setPhase(p schema.Phase, msg string) {
	now := time.Now()
	s.mu.Lock()
	s.phase, s.phaseMsg = p, msg
	id := ""
	if s.cur != nil {
		id = s.cur.res.RestartID
		s.cur.res.Phase = p
		if op := s.cur; p != op.phase {
			s.met.phaseEnded(op.phase, now.Sub(op.phaseAt).Seconds())
			op.phase, op.phaseAt = p, now
		}
	}
	s.mu.Unlock()
	_ = s.bs.Publish(schema.NodeEventSubject(s.cfg.NodeID, schema.EventPhase), schema.PhaseEvent{
		Type: schema.TypePhaseEvent, NodeID: s.cfg.NodeID, RestartID: id, Phase: p, Progress: p.Progress(),
		Message: msg, Timestamp: time.Now().UTC()})
}

// workerPhase relays a phase the worker reports.
func (s *Supervisor) workerPhase(p *proc, m phaseMsg) {
	s.mu.Lock()
	mine := s.worker == p
	s.mu.Unlock()
	if mine {
		s.setPhase(m.Phase, m.Message)
	}
}

func (op *restartOp) fail(code schema.Code, format string, args ...any) {
	op.res.Success = false
	op.res.Error = schema.Errorf(code, format, args...)
	op.res.Message = op.res.Error.Message
}

func (op *restartOp) note(format string, args ...any) {
	op.res.Errors = append(op.res.Errors, fmt.Sprintf(format, args...))
}

// execute runs the restart state machine.
func (s *Supervisor) execute(op *restartOp) {
	defer s.finish(op)
	req := &op.req
	s.setPhase(schema.PhasePreparing, "restart "+req.RestartID+" ("+string(req.Reason)+")")
	old := s.worker
	if old != nil {
		op.res.OldPID = old.pid
	}
	graceful := req.Graceful
	if p, ok := s.currentWorker(); ok && graceful {
		p.expect("graceful restart")
		deadline := time.Now().Add(req.TimeoutDuration())
		dctx, cancel := context.WithDeadline(s.ctx, deadline)
		var dr drainResult
		err := p.ipc.Call(dctx, ipcDrain, drainRequest{PreserveState: req.PreserveState, Reason: req.Reason,
			RestartID: req.RestartID, ExpectedSeconds: schema.Secs(op.expect), Trigger: op.trigger}, &dr)
		cancel()
		switch {
		case err == nil:
			op.res.State.TasksSaved = dr.TasksSaved
			op.res.State.SnapshotWritten = dr.Snapshot != nil
			if dr.Snapshot != nil {
				op.res.State.SizeBytes, op.res.State.Checksum = dr.Snapshot.SizeBytes, dr.Snapshot.Checksum
				op.archived = dr.Snapshot
			}
			op.res.Errors = append(op.res.Errors, dr.Warnings...)
			s.setPhase(schema.PhaseStopping, "waiting for the worker to exit")
			if p.waitExit(max(time.Until(deadline), time.Second)) != nil {
				op.note("worker %d did not exit after draining; killed", p.pid)
				p.kill()
			}
		case errors.Is(err, context.DeadlineExceeded):
			op.note("graceful part exceeded the %gs timeout; worker %d killed, continuing as an emergency restart", req.Timeout, p.pid)
			graceful = false
		case p.alive():
			// The worker refused (a snapshot failed, say) and is serving again.
			p.mu.Lock()
			p.expected = false
			p.mu.Unlock()
			op.fail(schema.CodeProcessFailed, "graceful drain failed, old worker %d still serving: %v", p.pid, err)
			op.res.NewPID = p.pid
			return
		default:
			op.note("worker %d died while draining: %v", p.pid, err)
		}
	}
	if old != nil && old.alive() {
		old.expect("restart")
		if !graceful || old.alive() {
			s.setPhase(schema.PhaseStopping, "killing the worker")
			old.kill()
		}
		if old.waitExit(10*time.Second) != nil {
			op.note("worker %d survived SIGKILL for 10s", old.pid)
		}
	}
	if !graceful && req.Graceful {
		op.res.Graceful = false
	}
	s.startNew(op)
}

// startNew starts the replacement worker and waits for it to serve.
func (s *Supervisor) startNew(op *restartOp) {
	req := &op.req
	s.setPhase(schema.PhaseStartingProcess, "starting a new worker")
	s.mu.Lock()
	prevConfig := s.nodeConfig
	s.mu.Unlock()
	if req.Reason == schema.ReasonConfigurationUpdate {
		cfg, err := s.loadNodeConfig(s.ctx)
		if err != nil {
			op.note("configuration not reloaded, keeping %s: %v", s.nodeConfig.ConfigVersion, err)
		} else {
			s.mu.Lock()
			s.nodeConfig = cfg
			s.mu.Unlock()
		}
	}
	if req.Reason == schema.ReasonSchemaMigration {
		s.mu.Lock()
		s.stateSchema = schema.CurrentSchemaVersion
		s.mu.Unlock()
	}
	p, ri, err := s.startNewWorker(op, req)
	if p == nil {
		op.fail(schema.CodeProcessFailed, "starting worker: %v", err)
		return
	}
	if err != nil {
		p.expect("start failed")
		p.kill()
		<-p.exited
		for _, l := range p.tail.Last(5) {
			op.note("worker log: %s", l)
		}
		op.fail(schema.CodeProcessFailed, "new worker did not become healthy: %v", err)
		s.mu.Lock()
		if s.nodeConfig.ConfigVersion != prevConfig.ConfigVersion || s.nodeConfig.FailStart != prevConfig.FailStart {
			op.note("configuration %s rolled back to %s, the last one a worker served with", s.nodeConfig.ConfigVersion, prevConfig.ConfigVersion)
			s.nodeConfig = prevConfig
		}
		s.mu.Unlock()
		return
	}
	s.workerReady(p, ri)
	op.res.Success = true
	// Preserved: the new worker carries the state across (snapshot + journal);
	// an emergency restart writes no snapshot and still preserves it.
	op.res.State.Preserved = op.restore == ""
	op.res.Message = fmt.Sprintf("restarted: worker %d replaced by %d", op.res.OldPID, p.pid)
	st := &op.res.State
	st.TasksRestored, st.SessionsRestored, st.JournalReplayed = ri.TasksRestored, ri.SessionsRestored, ri.JournalReplayed
	st.SchemaVersion, st.MigratedFrom, st.ConfigVersion = ri.SchemaVersion, ri.MigratedFrom, ri.ConfigVersion
	op.res.BufferedRequestsReplayed = ri.BufferedPending
	op.res.Errors = append(op.res.Errors, ri.Warnings...)
}

// startNewWorker starts the restart's new worker and waits for it to be
// ready. A worker that could not start because NATS or JetStream did not
// answer (a leader election after a server was lost) is replaced by another,
// with backoff, until StartTimeout from the first: the restart rides the
// blip instead of failing (found by the chaos suite). It returns the last
// worker (nil if none could be spawned) and its readiness or error.
func (s *Supervisor) startNewWorker(op *restartOp, req *schema.RestartRequest) (*proc, readyInfo, error) {
	deadline := time.Now().Add(s.cfg.StartTimeout)
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second), backoff.WithRandomizationFactor(0), backoff.WithMaxElapsedTime(0))
	for {
		p, err := s.spawn(s.workerEnv(req.Reason, req.RestartID, op.restore))
		if err != nil {
			return nil, readyInfo{}, err
		}
		s.setWorker(p)
		op.res.NewPID = p.pid
		ri, err := p.waitReady(s.ctx, time.Until(deadline))
		wait := b.NextBackOff()
		if err == nil || !p.tempFailed() || time.Until(deadline) < wait {
			return p, ri, err
		}
		p.expect("start failed: JetStream not answering")
		op.note("worker %d could not reach JetStream (%v); starting another in %s", p.pid, err, wait)
		select {
		case <-s.ctx.Done():
			return p, ri, err
		case <-time.After(wait):
		}
	}
}

// finish records the result, alerts, and returns the node to idle.
func (s *Supervisor) finish(op *restartOp) {
	now := time.Now()
	op.res.CompletedAt = now.UTC()
	op.res.Duration = schema.Secs(now.Sub(op.started))
	op.res.Progress = 100
	if op.res.Success {
		op.res.Phase = schema.PhaseComplete
	} else {
		op.res.Phase = schema.PhaseFailed
	}
	s.setPhase(op.res.Phase, op.res.Message)
	s.hist.record(s.ctx, s.bs, op.res)
	s.met.restarted(op)
	s.restartConditions(op.res)
	s.mu.Lock()
	s.cur = nil
	_, serving := s.currentWorkerLocked()
	if serving {
		s.phase, s.phaseMsg = schema.PhaseIdle, ""
	}
	s.mu.Unlock()
	close(op.done)
	if !serving && s.ctx.Err() == nil {
		// Never leave the node without a worker: keep trying, with backoff.
		go s.recover(fmt.Sprintf("restart %s left no worker serving", op.res.RestartID), 0)
	}
}

func (s *Supervisor) currentWorkerLocked() (*proc, bool) {
	p := s.worker
	return p, p != nil && s.ready.PID == p.pid && p.alive()
}

// recover restarts a worker that was lost, with exponential backoff that
// resets after a healthy period. It is recorded as a crash_recovery restart;
// if that fails too, finish schedules the next attempt, with a longer delay.
func (s *Supervisor) recover(why string, healthyFor time.Duration) {
	s.mu.Lock()
	if healthyFor >= s.cfg.HealthyReset {
		s.crash.Reset()
	}
	delay := s.crash.NextBackOff()
	s.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-s.ctx.Done():
		return
	}
	if _, ok := s.currentWorker(); ok {
		return // a restart meanwhile (an operator's) brought a worker back
	}
	req := schema.DefaultRestartRequest()
	req.Graceful, req.Reason = false, schema.ReasonCrashRecovery
	op, err := s.begin(req, 0, "", "")
	if err != nil {
		return // another restart is replacing the worker; its finish decides
	}
	s.mu.Lock()
	op.note("%s; restarted after %s backoff", why, delay.Round(time.Millisecond))
	s.mu.Unlock()
}

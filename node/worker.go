package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// worker is the process that holds a node's tasks and sessions.
type worker struct {
	env       workerEnv
	log       *slog.Logger
	ipc       *ipcConn
	conn      *bus.Conn
	bs        *bus.Store
	st        *store
	startedAt time.Time

	mu          sync.Mutex
	ready       bool
	maintenance bool
	readyAt     time.Time
	lastSnap    *schema.SnapshotInfo
	backups     int
	reqStop     context.CancelFunc
	reqDone     chan struct{}
	recon       reconnect      // the clients of the restart that started this worker (sessions.go)
	reconPub    sync.WaitGroup // reconnection outcomes being stored
	expired     int
	drained     chan struct{}

	jobs   jobRunner
	snapMu sync.Mutex // one snapshot at a time
}

// RunWorker is the worker process's main: it restores the node's state,
// serves its buffered requests and obeys its supervisor until told to drain
// or until the supervisor goes away. It returns the exit code.
func RunWorker() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var env workerEnv
	if err := json.Unmarshal([]byte(os.Getenv(EnvWorker)), &env); err != nil {
		log.Error("worker: bad environment", "err", err)
		return 2
	}
	log = log.With("node", env.NodeID, "pid", os.Getpid())
	// Ctrl-C in a terminal belongs to the supervisor, which drains us.
	signal.Ignore(syscall.SIGINT)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	ipc, err := ipcFromFD(workerFD)
	if err != nil {
		log.Error("worker: no channel to supervisor", "err", err)
		return 2
	}
	w := &worker{env: env, log: log, ipc: ipc, startedAt: time.Now(), drained: make(chan struct{})}
	serveErr := make(chan error, 1)
	go func() { serveErr <- ipc.Serve(ctx, w.handleIPC, nil) }()

	if err := w.start(ctx); err != nil {
		log.Error("worker: start failed", "err", err, "transient", bus.Transient(err))
		fmt.Fprintf(os.Stderr, "worker start failed: %v\n", err)
		w.close()
		if bus.Transient(err) {
			return exitTempFail
		}
		return 1
	}
	select {
	case <-w.drained:
		w.close()
		return 0
	case <-serveErr:
		// The supervisor is gone: a worker never outlives it.
		log.Warn("worker: supervisor channel closed; exiting")
		w.close()
		return 1
	case <-ctx.Done():
		log.Warn("worker: SIGTERM; exiting (the supervisor drains, not the worker)")
		w.close()
		return 1
	}
}

func (w *worker) close() {
	if w.conn != nil {
		_ = w.conn.Drain()
	}
	_ = w.ipc.Close()
}

func (w *worker) phase(p schema.Phase, msg string) {
	_ = w.ipc.Event(evPhase, phaseMsg{Phase: p, Message: msg})
}

// start restores state and begins serving.
func (w *worker) start(ctx context.Context) error {
	w.phase(schema.PhaseLoadingState, "connecting to NATS and loading the latest snapshot")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	opts := w.env.NATS
	opts.Name = "restartcoord-worker-" + w.env.NodeID
	var err error
	if w.bs, err = bus.Open(cctx, opts); err != nil {
		return err
	}
	w.conn = w.bs.Conn()
	holder, err := bus.LeaseHolder(cctx, w.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode(w.env.NodeID))
	if err != nil {
		return fmt.Errorf("reading node lease: %w", err)
	}
	if holder == "" {
		// Expired while NATS was away: the supervisor takes it again.
		return errLeaseFree
	}
	// The lease holds a Holder record; older supervisors wrote the bare
	// instance string, which holderInstance returns as it is.
	if holderInstance(holder) != w.env.Instance {
		return fmt.Errorf("node id %s is held by %q, not by this worker's supervisor: refusing to consume", w.env.NodeID, holder)
	}
	if w.env.Config.FailStart {
		return errors.New("configuration says fail_start: refusing to become healthy")
	}
	w.st = newStore(w.env.NodeID, w.bs)
	w.jobs = jobRunner{w: w}

	info := readyInfo{PID: os.Getpid(), SchemaVersion: w.env.StateSchema, ConfigVersion: w.env.Config.ConfigVersion}
	gcDone := loadingGC()
	defer gcDone()
	snap, warnings, err := w.loadSnapshot(ctx)
	if err != nil {
		return err
	}
	info.Warnings = warnings
	var seq uint64
	if snap != nil {
		st, bodies, from, err := snap.StateAndReplies()
		if err != nil {
			return err
		}
		w.st.load(st, bodies, snap.JournalSeq)
		seq = snap.JournalSeq
		si := schema.SnapshotInfo{SnapshotID: snap.SnapshotID, NodeID: snap.NodeID, TakenAt: snap.TakenAt,
			Trigger: snap.Trigger, SchemaVersion: snap.SchemaVersion, JournalSeq: snap.JournalSeq,
			SizeBytes: int64(len(snap.Payload)), Tasks: len(st.Tasks), Sessions: len(st.Sessions), Checksum: snap.Checksum}
		info.Snapshot = &si
		w.lastSnap = &si
		if from != w.env.StateSchema {
			info.MigratedFrom = from
		}
	}
	gcDone()

	w.phase(schema.PhaseRestoringState, "replaying the journal after the snapshot")
	if w.env.RestoreSnapshot != "" {
		// A rollback: the journal after the backup is discarded, so the new
		// baseline starts at the journal's end.
		last, err := w.bs.LastSeq(ctx, w.env.NodeID)
		if err != nil {
			return err
		}
		w.st.lastSeq = last
	} else {
		n, err := w.bs.Replay(ctx, w.env.NodeID, seq, func(seq uint64, e *schema.JournalEntry) error {
			w.st.apply(seq, e)
			return nil
		})
		if err != nil {
			return fmt.Errorf("replaying journal: %w", err)
		}
		info.JournalReplayed = n
	}
	info.TasksRestored, info.SessionsRestored = len(w.st.tasks), len(w.st.sessions)
	stored, err := w.carryStored(ctx)
	if err != nil {
		return fmt.Errorf("reading the last reconnection outcome: %w", err)
	}
	if stored {
		w.env.ReconnectCarry = nil
	}
	w.mu.Lock()
	w.openReconnect()
	w.mu.Unlock()
	// A migrated or rolled-back state becomes the new baseline at once.
	if info.MigratedFrom != 0 || w.env.RestoreSnapshot != "" {
		trigger := "migration"
		if w.env.RestoreSnapshot != "" {
			trigger = "restore"
		}
		if _, err := w.takeSnapshot(ctx, trigger); err != nil {
			return fmt.Errorf("writing %s snapshot: %w", trigger, err)
		}
	}
	if list, err := w.bs.ListSnapshots(ctx, w.env.NodeID); err == nil {
		w.backups = len(list)
	}

	w.phase(schema.PhaseResumingTasks, "resuming suspended jobs (they run from their checkpoints once the worker serves)")
	jobs, err := w.jobs.resumeAll(ctx)
	if err != nil {
		return err
	}

	w.phase(schema.PhaseEnablingConnections, "taking client requests from the buffer")
	pending, err := w.startRequests(ctx)
	if err != nil {
		return err
	}
	info.BufferedPending = pending
	now := stateNow()
	w.mu.Lock()
	w.ready, w.readyAt = true, now
	w.closeReconnectIfDone()
	w.mu.Unlock()
	w.jobs.startAll(jobs)
	info.ReadyAt = now
	_ = w.bs.Publish(schema.NotifySubject(w.env.NodeID), schema.Notice{Type: schema.TypeNotice,
		Event: schema.NoticeRestartComplete, NodeID: w.env.NodeID, RestartID: w.env.RestartID,
		Reason: w.env.Reason, Timestamp: now})
	go w.periodicSnapshots(ctx)
	go w.cleanupSessions(ctx)
	go w.reconnectDeadline(ctx)
	return w.ipc.Event(evReady, info)
}

// loadSnapshot picks the snapshot to restore: the one asked for, else the
// newest that verifies (falling back once: the journal is compacted only
// behind the second newest, so the previous one plus the journal is whole).
func (w *worker) loadSnapshot(ctx context.Context) (*schema.Snapshot, []string, error) {
	if id := w.env.RestoreSnapshot; id != "" {
		s, err := w.bs.GetSnapshot(ctx, w.env.NodeID, id)
		return s, nil, err
	}
	list, err := w.bs.ListSnapshots(ctx, w.env.NodeID)
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	for i, info := range list {
		if i > 1 {
			break
		}
		s, err := w.bs.GetSnapshot(ctx, w.env.NodeID, info.SnapshotID)
		if err == nil {
			return s, warnings, nil
		}
		warnings = append(warnings, fmt.Sprintf("snapshot %s unusable: %v", info.SnapshotID, err))
		w.log.Error("snapshot unusable", "snapshot", info.SnapshotID, "err", err)
	}
	if len(warnings) > 0 {
		return nil, warnings, schema.Errorf(schema.CodeStateCorruption, "no usable snapshot: %v", warnings)
	}
	return nil, nil, nil
}

// every calls fn every d until the worker stops or drains.
func (w *worker) every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.drained:
			return
		case <-t.C:
			fn()
		}
	}
}

func (w *worker) periodicSnapshots(ctx context.Context) {
	w.every(ctx, w.env.SnapshotInterval, func() {
		w.mu.Lock()
		busy := w.maintenance
		w.mu.Unlock()
		if busy {
			return
		}
		if _, err := w.takeSnapshot(ctx, "periodic"); err != nil {
			w.log.Error("periodic snapshot failed", "err", err)
		}
	})
}

// handleIPC answers the supervisor.
func (w *worker) handleIPC(ctx context.Context, op string, data json.RawMessage) (any, error) {
	switch op {
	case ipcPing:
		return map[string]int{"pid": os.Getpid()}, nil
	case ipcStats:
		return w.stats(ctx), nil
	case ipcDrain:
		var req drainRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, err
		}
		return w.drain(ctx, req)
	case ipcResume:
		w.resume(ctx)
		return nil, nil
	case ipcSnapshot:
		var req struct{ Trigger string }
		_ = json.Unmarshal(data, &req)
		if req.Trigger == "" {
			req.Trigger = "manual"
		}
		return w.takeSnapshot(ctx, req.Trigger)
	case ipcDiff:
		var req struct{ SnapshotID string }
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, err
		}
		return w.diff(ctx, req.SnapshotID)
	case ipcReply:
		var req struct{ RequestID string }
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, err
		}
		if w.st == nil {
			return nil, schema.Errorf(schema.CodeSystemNotReady, "worker is starting")
		}
		if r, ok := w.st.keptReply(req.RequestID); ok {
			return r, nil
		}
		return nil, schema.Errorf(schema.CodeNotFound, "no reply kept for request %s", req.RequestID)
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

// drain runs the graceful half of a restart: maintenance mode, jobs
// suspended at a step boundary, a verified snapshot, clients told; then the
// worker exits once the answer is sent.
func (w *worker) drain(ctx context.Context, req drainRequest) (*drainResult, error) {
	res := &drainResult{}
	w.phase(schema.PhaseMaintenanceMode, "holding new work")
	w.mu.Lock()
	w.maintenance = true
	w.mu.Unlock()
	w.stopRequests()

	w.phase(schema.PhaseSuspendingTasks, "stopping jobs at a step boundary")
	start := time.Now()
	n, err := w.jobs.suspendAll(ctx, w.env.SuspendTimeout)
	res.JobsSuspended, res.SuspendSeconds = n, schema.Secs(time.Since(start))
	if err != nil {
		return nil, w.undrain(ctx, fmt.Errorf("suspending jobs: %w", err))
	}

	w.phase(schema.PhaseSerializingState, "writing and verifying a snapshot")
	if req.PreserveState {
		trigger := req.Trigger
		if trigger == "" {
			trigger = "restart"
		}
		info, err := w.takeSnapshot(ctx, trigger)
		if err != nil {
			return nil, w.undrain(ctx, fmt.Errorf("snapshot: %w", err))
		}
		res.Snapshot = info
		res.TasksSaved, res.SessionsSaved = info.Tasks, info.Sessions
	} else {
		w.st.mu.Lock()
		res.TasksSaved, res.SessionsSaved = len(w.st.tasks), len(w.st.sessions)
		w.st.mu.Unlock()
	}

	w.phase(schema.PhaseClosingConnections, "telling clients a restart is pending")
	_ = w.bs.Publish(schema.NotifySubject(w.env.NodeID), schema.Notice{Type: schema.TypeNotice,
		Event: schema.NoticeRestartPending, NodeID: w.env.NodeID, RestartID: req.RestartID, Reason: req.Reason,
		ExpectedSeconds: req.ExpectedSeconds, Timestamp: time.Now().UTC()})
	_ = w.conn.Flush()
	// Exit once the answer is on its way.
	go func() {
		time.Sleep(20 * time.Millisecond)
		w.waitReconnectionStored(5 * time.Second)
		close(w.drained)
	}()
	return res, nil
}

// undrain leaves maintenance mode after a failed drain and returns err.
func (w *worker) undrain(ctx context.Context, err error) error {
	w.resume(ctx)
	return err
}

// resume leaves maintenance mode: jobs and requests run again. It tries
// while JetStream does not answer (a drain that failed in a NATS partition
// is undone in one), for up to resumeWithin. A worker that cannot resume
// exits: it must not stay up, answering healthy, with no request taken
// (found by the chaos suite: a roll's drain failed during a partition, its
// undo could not reopen the request buffer, and the node served nothing
// for four minutes). The supervisor replaces it from the journal. The
// journal writes are bounded by resumeWithin too; the request buffer gets
// ctx, which it serves for.
func (w *worker) resume(ctx context.Context) {
	w.mu.Lock()
	was := w.maintenance
	w.mu.Unlock()
	if !was {
		return
	}
	bctx, cancel := context.WithTimeout(ctx, resumeWithin)
	defer cancel()
	var jobs []string
	err := bus.RetryTransient(bctx, resumeWithin, func(err error, wait time.Duration) {
		w.log.Warn("leaving maintenance mode: JetStream not answering; retrying", "err", err, "in", wait.Round(time.Millisecond))
	}, func() error {
		var err error
		if jobs, err = w.jobs.resumeAll(bctx); err != nil {
			return err
		}
		_, err = w.startRequests(ctx)
		return err
	})
	if err != nil {
		w.log.Error("cannot leave maintenance mode; worker exits so a new one restores from the journal", "err", err)
		fmt.Fprintf(os.Stderr, "resume failed: %v\n", err)
		os.Exit(exitTempFail)
	}
	w.mu.Lock()
	w.maintenance = false
	w.mu.Unlock()
	w.jobs.startAll(jobs)
}

// resumeWithin bounds resume's tries.
const resumeWithin = 20 * time.Second

func (w *worker) stats(ctx context.Context) workerStats {
	w.mu.Lock()
	s := workerStats{PID: os.Getpid(), StartedAt: w.startedAt, Ready: w.ready, Maintenance: w.maintenance,
		ConfigVersion: w.env.Config.ConfigVersion, SchemaVersion: w.env.StateSchema, LastSnapshot: w.lastSnap,
		Backups: w.backups, Expired: w.expired}
	if w.st != nil {
		s.Reconnection = w.reconnectReadingLocked()
	}
	w.mu.Unlock()
	if w.conn != nil {
		s.NATSConnected = w.conn.IsConnected()
	}
	if w.st != nil {
		cut := time.Now().Add(-60 * time.Second)
		w.st.mu.Lock()
		s.Tasks = len(w.st.tasks)
		for _, t := range w.st.tasks {
			if t.Status == schema.TaskActive {
				s.ActiveTasks++
			}
		}
		for _, x := range w.st.sessions {
			s.Sessions = append(s.Sessions, *x)
			if x.LastActivity.After(cut) {
				s.ActiveSessions++
			}
		}
		w.st.mu.Unlock()
		s.PendingWrites = int(w.st.pending.Load())
	}
	s.RunningJobs = w.jobs.running()
	if ends := w.jobs.stepEnds(); len(ends) > 0 && w.st != nil {
		// A step of a task no longer active makes no effect: nothing to wait for.
		w.st.mu.Lock()
		for id := range ends {
			if t, ok := w.st.tasks[id]; !ok || t.Status != schema.TaskActive {
				delete(ends, id)
			}
		}
		w.st.mu.Unlock()
		s.StepEnds = ends
	}
	if s.LastSnapshot != nil {
		s.StateSizeBytes = s.LastSnapshot.SizeBytes
	}
	s.MeasuredAt = time.Now().UTC()
	return s
}

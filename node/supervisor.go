package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// Supervisor owns a node: its id lease, registry entry, heartbeats, control
// endpoints and its worker process, which it starts, restarts on request,
// restarts after a crash with exponential backoff, and kills when it stops
// answering the watchdog.
//
// Lock order: Supervisor.mu, then proc.mu. Never call the worker while
// holding Supervisor.mu.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	instance string
	// leaseValue is what the node-id lease holds: the instance and what
	// proves its process dead to a successor on this machine (Holder).
	leaseValue []byte
	idStart    NodeIDStart
	started    time.Time

	conn  *bus.Conn
	bs    *bus.Store
	lease *bus.Lease
	svc   *bus.Service
	nodes jetstream.KeyValue
	hist  *history
	met   *nodeMetrics // nil without Config.Metrics

	mu          sync.Mutex
	worker      *proc
	ready       readyInfo
	readySince  time.Time
	phase       schema.Phase
	phaseMsg    string
	cur         *restartOp
	ops         map[string]*restartOp
	lastStats   *workerStats
	fence       uint64
	nodeConfig  NodeConfig
	stateSchema int
	hbSeq       uint64
	buffered    int        // requests waiting in the node's buffer, as watchBuffers last counted them
	conds       conditions // alert conditions open (alertcond.go)
	crash       *backoff.ExponentialBackOff

	ctx  context.Context // cancelled when Run ends
	wg   sync.WaitGroup
	runC context.CancelFunc
	// lost is closed when another instance holds the node id (lostErr says
	// which): Run stops without deregistering or releasing what is now the
	// other's.
	lost    chan struct{}
	lostErr error
}

// NewSupervisor validates cfg and returns a supervisor ready to Run.
func NewSupervisor(cfg Config) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	host, _ := os.Hostname()
	s := &Supervisor{cfg: cfg, log: log.With("node", cfg.NodeID), phase: schema.PhaseIdle,
		ops: map[string]*restartOp{}, stateSchema: cfg.StateSchema, lost: make(chan struct{}),
		instance: fmt.Sprintf("%s@%s/%d/%s", cfg.NodeID, host, os.Getpid(), uuid.NewString()[:8])}
	holder, err := ProcessHolder(s.instance, os.Getpid())
	if err != nil {
		// Not fatal: a successor cannot prove this process dead and waits
		// out its lease, as before the record existed.
		s.log.Warn("node id lease: cannot record this process for a fast takeover after a crash", "err", err)
	}
	s.leaseValue = holder.Marshal()
	if s.met, err = newNodeMetrics(cfg.Metrics, s); err != nil {
		return nil, fmt.Errorf("node: registering metrics: %w", err)
	}
	s.crash = backoff.NewExponentialBackOff(backoff.WithInitialInterval(cfg.CrashBackoffStart),
		backoff.WithMaxInterval(cfg.CrashBackoffMax), backoff.WithMaxElapsedTime(0), backoff.WithRandomizationFactor(0.2))
	return s, nil
}

// ErrNodeIDTaken is returned by Run when another supervisor holds the node id.
var ErrNodeIDTaken = errors.New("node: node id already taken")

// Run starts the node and serves until ctx ends; then it drains: the worker
// suspends its jobs and writes a snapshot, the node leaves the registry and
// releases its id. ready, if not nil, is closed once the node serves.
func (s *Supervisor) Run(ctx context.Context, ready chan<- struct{}) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.ctx, s.runC = rctx, cancel
	defer cancel()
	s.started = time.Now()
	if err := s.open(ctx); err != nil {
		s.closeConn()
		return err
	}
	first, err := s.startFirst(ctx)
	if err != nil {
		s.log.Error("first worker did not become ready; retrying with backoff", "err", err)
	}
	svc, err := s.conn.Serve(s.serviceConfig())
	if err != nil {
		s.stop(context.Background())
		return err
	}
	s.svc = svc
	s.goLoop(s.heartbeats)
	s.goLoop(s.refreshLease)
	s.goLoop(s.watchdog)
	s.goLoop(s.watchBuffers)
	if first == nil {
		go s.recover("worker did not become ready at start", 0)
	}
	s.log.Info("node serving", "instance", s.instance, "worker_pid", s.workerPID())
	if ready != nil {
		close(ready)
	}
	select {
	case <-ctx.Done():
		s.log.Info("node stopping: draining the worker")
		return s.stop(context.Background())
	case <-s.lost:
		// The worker is killed already; the registry entry and the lease
		// are the new holder's now.
		s.log.Error("node stopping: its id is held by another instance", "err", s.lostErr)
		return errors.Join(s.lostErr, s.stop(context.Background()))
	}
}

func (s *Supervisor) goLoop(f func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f(s.ctx)
	}()
}

// open connects, checks the store, takes the node id and registers.
func (s *Supervisor) open(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts := s.cfg.NATS
	opts.Name = "restartcoord-node-" + s.cfg.NodeID
	var err error
	if s.bs, err = bus.Open(cctx, opts); err != nil {
		return err
	}
	s.conn = s.bs.Conn()
	if err := s.takeNodeID(ctx); err != nil {
		return err
	}
	s.met.lease(true)
	// Taking the node id can wait out a predecessor's lease and a JetStream
	// failover; the rest of the start (reads, and a put of the registry
	// entry) is retried while JetStream recovers, up to StartTimeout.
	cancel()
	return bus.RetryTransient(ctx, s.cfg.StartTimeout, s.warnRetry("node start"), func() error { return s.load(ctx) })
}

// load reads the node's registry entry, configuration and restart history,
// then registers it.
func (s *Supervisor) load(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	js := s.bs.JetStream()
	var err error
	if s.nodes, err = js.KeyValue(cctx, schema.BucketNodes); err != nil {
		return err
	}
	// From the bucket's leader (a replica may lag): a fencing token read
	// stale would let a deposed coordinator act on this node once more.
	prev, _, err := bus.KVGet(cctx, js, schema.BucketNodes, s.cfg.NodeID)
	switch {
	case err == nil:
		var info schema.NodeInfo
		if json.Unmarshal(prev, &info) == nil {
			s.fence = info.FencingToken
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return err
	}
	if s.nodeConfig, err = s.loadNodeConfig(cctx); err != nil {
		return err
	}
	if s.hist, err = loadHistory(cctx, s.bs, s.cfg.NodeID); err != nil {
		return fmt.Errorf("node: loading restart history: %w", err)
	}
	s.openFromStore(cctx)
	return s.register(cctx)
}

// warnRetry logs a retry of what while JetStream does not answer.
func (s *Supervisor) warnRetry(what string) func(err error, wait time.Duration) {
	return func(err error, wait time.Duration) {
		s.log.Warn(what+": JetStream not answering; retrying", "err", err, "in", wait.Round(time.Millisecond))
	}
}

func (s *Supervisor) register(ctx context.Context) error {
	host, _ := os.Hostname()
	s.mu.Lock()
	info := schema.NodeInfo{Type: schema.TypeNodeInfo, NodeID: s.cfg.NodeID, Group: s.cfg.Group, Priority: s.cfg.Priority,
		Version: s.cfg.Version, Host: host, PID: os.Getpid(), Instance: s.instance, StartedAt: s.started.UTC(),
		FencingToken: s.fence}
	s.mu.Unlock()
	data, _ := json.Marshal(info)
	_, err := s.nodes.Put(ctx, s.cfg.NodeID, data)
	return err
}

func (s *Supervisor) workerEnv(reason schema.Reason, restartID, restore string) workerEnv {
	s.mu.Lock()
	defer s.mu.Unlock()
	return workerEnv{NodeID: s.cfg.NodeID, Instance: s.instance, NATS: s.cfg.NATS, StateSchema: s.stateSchema,
		Config: s.nodeConfig, Reason: reason, RestartID: restartID, RestoreSnapshot: restore,
		SuspendTimeout: s.cfg.SuspendTimeout, SnapshotInterval: s.cfg.SnapshotInterval,
		KeepSnapshots: s.cfg.KeepSnapshots, MaxStateSize: s.cfg.MaxStateSize,
		BufferExpiration: s.cfg.BufferExpiration, ReplyKeep: s.cfg.ReplyKeep, Version: s.cfg.Version,
		CleanupInterval: s.cfg.CleanupInterval, SessionIdle: s.cfg.SessionIdle,
		ReconnectWindow: s.cfg.ReconnectWindow, RestartStartedAt: s.restartStartedLocked(),
		ReconnectCarry: s.reconnectCarryLocked()}
}

// restartStartedLocked is when the running restart began (zero: none).
func (s *Supervisor) restartStartedLocked() time.Time {
	if s.cur == nil {
		return time.Time{}
	}
	return s.cur.started
}

// reconnectCarryLocked is the last reading of the previous worker's
// reconnection window when it had not closed: the new worker merges it, so
// its clients count once (sessions.go).
func (s *Supervisor) reconnectCarryLocked() *reconnectReading {
	if s.lastStats == nil || s.lastStats.Reconnection == nil || s.lastStats.Reconnection.Closed {
		return nil
	}
	return s.lastStats.Reconnection
}

// startFirst starts the node's first worker and waits for it.
func (s *Supervisor) startFirst(ctx context.Context) (*proc, error) {
	p, err := s.spawn(s.workerEnv("", "", ""))
	if err != nil {
		return nil, err
	}
	s.setWorker(p)
	ri, err := p.waitReady(ctx, s.cfg.StartTimeout)
	if err != nil {
		p.expect("start failed")
		p.kill()
		return nil, fmt.Errorf("%w; last log lines: %v", err, p.tail.Last(5))
	}
	s.workerReady(p, ri)
	return p, nil
}

func (s *Supervisor) setWorker(p *proc) {
	s.mu.Lock()
	s.worker = p
	s.mu.Unlock()
	go s.watchExit(p)
}

func (s *Supervisor) workerReady(p *proc, ri readyInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker == p {
		s.ready, s.readySince = ri, time.Now()
		if s.cur == nil {
			s.phase, s.phaseMsg = schema.PhaseIdle, ""
		}
	}
}

func (s *Supervisor) workerPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker == nil {
		return 0
	}
	return s.worker.pid
}

// currentWorker returns the worker if it is alive and has reported ready.
func (s *Supervisor) currentWorker() (*proc, bool) {
	s.mu.Lock()
	p := s.worker
	ready := p != nil && !s.readySince.IsZero() && s.ready.PID == p.pid
	s.mu.Unlock()
	return p, p != nil && ready && p.alive()
}

// watchExit turns an exit the supervisor did not ask for into a recovery.
func (s *Supervisor) watchExit(p *proc) {
	<-p.exited
	if p.wasExpected() || s.ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	frozen := p.frozen
	p.mu.Unlock()
	why := fmt.Sprintf("worker %d exited unexpectedly (%v)", p.pid, p.exitErr)
	if frozen {
		why = fmt.Sprintf("worker %d stopped answering the watchdog for %s; killed", p.pid, s.cfg.WatchdogTimeout)
	}
	s.log.Warn("worker lost", "why", why)
	s.mu.Lock()
	healthyFor := time.Duration(0)
	if s.ready.PID == p.pid && !s.readySince.IsZero() {
		healthyFor = time.Since(s.readySince)
	}
	s.mu.Unlock()
	s.recover(why, healthyFor)
}

// watchdog pings the worker; one that does not answer within the timeout
// (frozen, deadlocked, SIGSTOPped) is killed, and watchExit restarts it.
func (s *Supervisor) watchdog(ctx context.Context) {
	t := time.NewTicker(s.cfg.WatchdogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, ok := s.currentWorker()
		if !ok || p.wasExpected() {
			continue
		}
		p.mu.Lock()
		killed := p.frozen
		p.mu.Unlock()
		if killed {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.WatchdogTimeout)
		err := p.ipc.Call(pctx, ipcPing, nil, nil)
		cancel()
		if err != nil && ctx.Err() == nil && p.alive() && !p.wasExpected() {
			p.mu.Lock()
			p.frozen = true
			p.mu.Unlock()
			s.log.Warn("worker not answering the watchdog; killing it", "pid", p.pid, "err", err)
			p.kill()
			s.met.watchdogKilled()
		}
	}
}

func (s *Supervisor) heartbeats(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		st, _ := s.readStats(ctx, s.cfg.HeartbeatInterval/2)
		s.mu.Lock()
		s.hbSeq++
		hb := schema.Heartbeat{Type: schema.TypeHeartbeat, NodeID: s.cfg.NodeID, Group: s.cfg.Group,
			Priority: s.cfg.Priority, Phase: s.phase, Seq: s.hbSeq, PID: os.Getpid(), Version: s.cfg.Version,
			Timestamp: time.Now().UTC()}
		if s.worker != nil {
			hb.WorkerPID = s.worker.pid
		}
		hb.BufferedRequests = s.buffered
		if s.worker != nil && s.ready.PID == s.worker.pid && !s.readySince.IsZero() {
			t := s.readySince.UTC()
			hb.WorkerStartedAt = &t
		}
		s.mu.Unlock()
		hb.Healthy = s.healthy(st)
		if st != nil {
			hb.Load, hb.ConfigVersion = float64(st.ActiveTasks), st.ConfigVersion
			hb.ActiveConnections = st.ActiveSessions
		}
		// Not while reconnecting: the client would buffer the heartbeat and
		// send it late, saying "unhealthy" only because it was disconnected
		// when written, and the coordinator would take it for news.
		if s.conn.IsConnected() {
			_ = s.bs.Publish(schema.HeartbeatSubject(s.cfg.NodeID), hb)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stop drains the worker, deregisters and releases the node id.
func (s *Supervisor) stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout+30*time.Second)
	defer cancel()
	var errs []error
	if s.svc != nil {
		// Stop answering first, so no restart starts while we drain.
		_ = s.svc.Stop()
	}
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		select {
		case <-cur.done:
		case <-ctx.Done():
		}
	}
	if p, ok := s.currentWorker(); ok {
		p.expect("node stopping")
		dctx, dcancel := context.WithTimeout(ctx, schema.Seconds(schema.DefaultRestartTimeout))
		var dr drainResult
		err := p.ipc.Call(dctx, ipcDrain, drainRequest{PreserveState: true, Reason: schema.ReasonManualRequest, Trigger: "shutdown"}, &dr)
		dcancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
		if p.waitExit(5*time.Second) != nil {
			p.kill()
			<-p.exited
		}
	} else if s.worker != nil {
		s.worker.expect("node stopping")
		s.worker.kill()
		<-s.worker.exited
	}
	s.runC()
	s.wg.Wait()
	// Deregistering and releasing ride a JetStream that is electing leaders
	// (a server just lost): retried for a while rather than given up.
	select {
	case <-s.lost: // the registry entry and the lease are the new holder's
		s.closeConn()
		return errors.Join(errs...)
	default:
	}
	if s.nodes != nil {
		if err := bus.RetryTransient(ctx, 10*time.Second, nil, func() error { return s.nodes.Delete(ctx, s.cfg.NodeID) }); err != nil {
			errs = append(errs, fmt.Errorf("deregister: %w", err))
		}
	}
	if s.lease != nil {
		if err := bus.RetryTransient(ctx, 10*time.Second, nil, func() error { return s.lease.Release(ctx) }); err != nil {
			errs = append(errs, err)
		}
		s.met.lease(false)
	}
	s.closeConn()
	return errors.Join(errs...)
}

func (s *Supervisor) closeConn() {
	if s.conn != nil {
		_ = s.conn.Drain()
		s.conn.Close()
	}
}

// healthy: the worker serves, no restart runs, NATS is reachable.
func (s *Supervisor) healthy(st *workerStats) bool {
	s.mu.Lock()
	idle := s.cur == nil && s.phase == schema.PhaseIdle
	s.mu.Unlock()
	_, ok := s.currentWorker()
	return ok && idle && st != nil && st.Ready && !st.Maintenance && s.conn.IsConnected()
}

// readStats asks the worker for a reading; while it cannot answer, the last
// reading is returned with fresh=false.
func (s *Supervisor) readStats(ctx context.Context, timeout time.Duration) (st *workerStats, fresh bool) {
	if p, ok := s.currentWorker(); ok {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		var got workerStats
		err := p.ipc.Call(cctx, ipcStats, nil, &got)
		cancel()
		if err == nil {
			s.mu.Lock()
			// Readers run at once (heartbeats, endpoints): an older
			// reading answered late must not replace a newer one.
			if l := s.lastStats; l == nil || l.PID != got.PID || !got.MeasuredAt.Before(l.MeasuredAt) {
				s.lastStats = &got
			}
			s.mu.Unlock()
			return &got, true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastStats, false
}

func (s *Supervisor) workerAlert(data json.RawMessage) {
	var a struct {
		Severity schema.Severity `json:"severity"`
		Kind     string          `json:"kind"`
		Message  string          `json:"message"`
		Details  map[string]any  `json:"details"`
	}
	if json.Unmarshal(data, &a) == nil {
		s.alert(a.Severity, a.Kind, a.Message, a.Details)
	}
}

// alert publishes a firing alert about this node and keeps it in ORCH_ALERTS.
func (s *Supervisor) alert(sev schema.Severity, kind, msg string, details map[string]any) {
	s.publishAlert(schema.Alert{Severity: sev, Kind: kind, Status: schema.AlertStatusFiring, Message: msg, Details: details})
}

// resolveAlert publishes that this node's condition of kind has cleared.
func (s *Supervisor) resolveAlert(kind, msg string, details map[string]any) {
	s.publishAlert(schema.Alert{Severity: schema.AlertKinds[kind], Kind: kind, Status: schema.AlertStatusResolved,
		Message: msg, Details: details})
}

func (s *Supervisor) publishAlert(a schema.Alert) {
	a.Type, a.AlertID, a.NodeID, a.Timestamp = schema.TypeAlert, uuid.NewString(), s.cfg.NodeID, time.Now().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.bs.PublishDurableOnce(ctx, schema.AlertSubject(a.Severity, a.Kind), "alert-"+a.AlertID, a); err != nil {
		s.log.Warn("alert not stored", "kind", a.Kind, "status", a.Status, "err", err)
	}
}

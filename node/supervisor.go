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
	buffered    int // requests waiting in the node's buffer, as watchBuffers last counted them
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
	return s.register(cctx)
}

// NodeIDStart says how Run took the node id.
type NodeIDStart struct {
	// TakenOver: the lease was held by a process proven dead on this
	// machine, and taken from it by compare-and-set on its revision.
	TakenOver bool
	// WaitedOut: the lease was held by a silent holder not proven dead,
	// and taken once it expired.
	WaitedOut bool
	// HolderRevision is the revision the previous holder's lease was at
	// when it was first seen (0 when the id was free).
	HolderRevision uint64
	// Term is the revision this supervisor's lease began at: its fencing
	// token, above any earlier holder's.
	Term uint64
}

// NodeIDStart says how Run took the node id; zero before it did.
func (s *Supervisor) NodeIDStart() NodeIDStart {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idStart
}

func (s *Supervisor) setNodeIDStart(st NodeIDStart) {
	st.Term = s.lease.Term()
	s.mu.Lock()
	s.idStart = st
	s.mu.Unlock()
}

// takeNodeID acquires the node-id lease. If another holder has it and its
// record proves it a dead process of this machine (Holder.ProvenDead: a
// whole node killed with -9 and restarted at once by systemd), the lease is
// taken from it at once by compare-and-set on its revision, unless
// Config.FastTakeover is off. Otherwise, if the holder is alive (its
// heartbeats arrive, or it refreshes the lease), this node refuses to
// start; if it is silent (another host, another boot or PID namespace, an
// unreadable or older record), it waits for that lease to expire.
func (s *Supervisor) takeNodeID(ctx context.Context) error {
	js := s.bs.JetStream()
	key := schema.LeaseKeyNode(s.cfg.NodeID)
	var err error
	s.lease, err = s.acquireNodeID(ctx, js, key)
	if err == nil {
		s.setNodeIDStart(NodeIDStart{})
	}
	if !errors.Is(err, bus.ErrLeaseHeld) {
		return err
	}
	first := revisionHeld(err)
	if s.cfg.FastTakeover {
		lease, terr := s.takeOverDead(ctx, js, key, err)
		if lease != nil {
			s.lease = lease
			s.setNodeIDStart(NodeIDStart{TakenOver: true, HolderRevision: first})
			return nil
		}
		if terr != nil {
			// Moved while we looked (refreshed: alive; taken: by another),
			// or NATS not answering: the ordinary path below decides.
			err = terr
		}
	}
	sub, serr := s.conn.SubscribeSync(schema.HeartbeatSubject(s.cfg.NodeID))
	if serr != nil {
		return serr
	}
	_, hbErr := sub.NextMsg(3 * s.cfg.HeartbeatInterval)
	_ = sub.Unsubscribe()
	if hbErr == nil {
		return fmt.Errorf("%w: %v, and it is alive (its heartbeats arrive)", ErrNodeIDTaken, err)
	}
	s.log.Warn("node id held by a silent holder; waiting for its lease to expire", "holder_err", err, "ttl", s.cfg.LeaseTTL)
	// Only a stream leader expires a lease: after a JetStream outage, one
	// elected late does it well after the TTL ran out (found by CI: a 3 s
	// outage and an 8 s election outlasted a wait of TTL + 2 s). So the wait
	// allows the TTL plus StartTimeout, the time any start gives JetStream
	// to answer, and ends early only if the lease moves: a holder that
	// refreshes it is alive.
	window := s.cfg.LeaseTTL + s.cfg.StartTimeout
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		s.lease, err = s.acquireNodeID(ctx, js, key)
		if err == nil {
			s.setNodeIDStart(NodeIDStart{WaitedOut: true, HolderRevision: first})
		}
		if !errors.Is(err, bus.ErrLeaseHeld) {
			return err
		}
		if rev := revisionHeld(err); first != 0 && rev != 0 && rev != first {
			return fmt.Errorf("%w: %v, and it is alive (its lease moved from revision %d to %d)", ErrNodeIDTaken, err, first, rev)
		}
	}
	return fmt.Errorf("%w: %v (its lease did not expire within %s)", ErrNodeIDTaken, err, window)
}

// takeOverDead takes the node-id lease from the holder named in heldErr if
// its record proves it dead, by compare-and-set on the revision it was read
// at: a holder that refreshed since (alive after all) or a successor that
// took it first moves that revision, and the write fails. It returns the
// lease, or nil and why not as an error (nil when the holder is simply not
// provably dead).
func (s *Supervisor) takeOverDead(ctx context.Context, js jetstream.JetStream, key string, heldErr error) (*bus.Lease, error) {
	var held *bus.LeaseHeldError
	if !errors.As(heldErr, &held) || held.Revision == 0 {
		return nil, nil
	}
	h, ok := ParseHolder([]byte(held.Holder))
	if !ok {
		s.log.Info("node id held by a holder without a process record (an older node); not provable dead", "holder", held.Holder)
		return nil, nil
	}
	dead, why := h.ProvenDead()
	if !dead {
		s.log.Info("node id holder not proven dead", "holder", h.Instance, "why", why)
		return nil, nil
	}
	var lease *bus.Lease
	err := bus.RetryTransient(ctx, s.cfg.StartTimeout, s.warnRetry("node id lease takeover"), func() error {
		var err error
		lease, err = bus.TakeOverLease(ctx, js, schema.BucketLeases, key, held.Revision, s.leaseValue, s.cfg.LeaseTTL)
		return err
	})
	if err != nil {
		s.log.Warn("node id holder proven dead, but its lease could not be taken over", "holder", h.Instance, "err", err)
		return nil, err
	}
	s.log.Info("node id lease taken over from a dead holder", "holder", h.Instance, "why", why,
		"from_revision", held.Revision, "to_revision", lease.Term())
	return lease, nil
}

// revisionHeld is the revision of a lease held by another, or 0.
func revisionHeld(err error) uint64 {
	var held *bus.LeaseHeldError
	if errors.As(err, &held) {
		return held.Revision
	}
	return 0
}

// acquireNodeID tries to create the node-id lease. A JetStream failover (a
// server lost, a partition healing) can leave the leases bucket without a
// leader for some seconds: such errors are retried for up to StartTimeout
// rather than failing the start (found by the chaos suite). A create that
// landed but whose answer was lost shows up as held by this very instance,
// silent, so the caller waits for it to expire like any silent holder's.
func (s *Supervisor) acquireNodeID(ctx context.Context, js jetstream.JetStream, key string) (*bus.Lease, error) {
	var l *bus.Lease
	err := bus.RetryTransient(ctx, s.cfg.StartTimeout, s.warnRetry("node id lease"), func() error {
		var err error
		l, err = bus.AcquireLease(ctx, js, schema.BucketLeases, key, s.leaseValue, s.cfg.LeaseTTL)
		return err
	})
	return l, err
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

// loadNodeConfig reads the node's configuration: ORCH_CONFIG key <node_id>,
// else group.<group>, else the config file, else version "0".
// It reads at the bucket's leader: a configuration update's restart comes
// right after the operator's write, which a lagging replica may not hold.
func (s *Supervisor) loadNodeConfig(ctx context.Context) (NodeConfig, error) {
	for _, key := range []string{s.cfg.NodeID, "group." + s.cfg.Group} {
		v, _, err := bus.KVGet(ctx, s.bs.JetStream(), schema.BucketConfig, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return NodeConfig{}, err
		}
		return ParseNodeConfig(v)
	}
	if s.cfg.ConfigFile != "" {
		data, err := os.ReadFile(s.cfg.ConfigFile)
		if err != nil {
			return NodeConfig{}, fmt.Errorf("node: config file: %w", err)
		}
		return ParseNodeConfig(data)
	}
	return NodeConfig{ConfigVersion: "0"}, nil
}

// ParseNodeConfig decodes a node configuration strictly.
func ParseNodeConfig(data []byte) (NodeConfig, error) {
	var c NodeConfig
	if err := schema.Decode(data, &c); err != nil {
		return NodeConfig{}, fmt.Errorf("node: configuration: %w", err)
	}
	return c, nil
}

// Validate implements schema.Validator.
func (c *NodeConfig) Validate() error {
	if c.ConfigVersion == "" || len(c.ConfigVersion) > 64 {
		return schema.Invalid("config_version", "config_version must be 1..64 characters")
	}
	return nil
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

func (s *Supervisor) refreshLease(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
		err := s.lease.Refresh(rctx)
		cancel()
		if errors.Is(err, bus.ErrLeaseLost) {
			err = s.retakeLease(ctx)
		}
		var other *heldByOther
		switch {
		case err == nil:
		case errors.As(err, &other):
			s.loseNodeID(fmt.Errorf("%w: the node id lease expired and %s holds it now", ErrNodeIDTaken, other.holder))
			return
		default:
			s.log.Warn("node id lease refresh failed (retrying)", "err", err)
		}
		// Held while valid by this clock: a failed refresh loses nothing yet.
		s.met.lease(err == nil || time.Now().Before(s.lease.ValidUntil()))
	}
}

// heldByOther: the node id lease is held by another instance.
type heldByOther struct{ holder string }

func (e *heldByOther) Error() string { return "node id lease held by " + e.holder }

// retakeLease handles a lease that expired under us (refreshes delayed by a
// slow or failing-over NATS, a partition, a frozen process): if nobody else
// took the key, take it again. It returns *heldByOther only when it read
// another holder; any other error means it could not tell (NATS not
// answering yet), and the next tick tries again.
func (s *Supervisor) retakeLease(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
	defer cancel()
	// A refresh whose acknowledgement was lost but which landed: still ours.
	ok, holder, err := s.lease.Adopt(rctx)
	switch {
	case err != nil:
		return fmt.Errorf("lease expired; reading it again: %w", err)
	case ok:
		return nil
	case holder != "":
		return &heldByOther{holderInstance(holder)}
	}
	lease, err := bus.AcquireLease(rctx, s.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode(s.cfg.NodeID),
		s.leaseValue, s.cfg.LeaseTTL)
	if err != nil {
		// Held: by us (a create that landed unacknowledged, adopted next
		// tick) or by another (seen next tick).
		return fmt.Errorf("lease expired; taking it again: %w", err)
	}
	s.log.Warn("node id lease had expired (refreshes delayed) with nobody else holding it; taken again")
	s.lease = lease
	return nil
}

// loseNodeID stops the node for good when another instance holds its id:
// the worker is killed at once (it must not serve as this node beside the
// other), and Run returns err without deregistering or releasing, which
// are the other's now. A supervisor restarted by systemd or Docker then
// finds the id held and alive, and refuses to start. Called once: the lease
// refresh loop ends after it.
func (s *Supervisor) loseNodeID(err error) {
	s.log.Error("node id lease lost: another instance owns this node id now; stopping the worker", "err", err)
	if p, ok := s.currentWorker(); ok {
		p.expect("lease lost")
		p.kill()
	}
	s.lostErr = err
	s.met.lease(false)
	close(s.lost)
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

// alert publishes an alert and keeps it in ORCH_ALERTS.
func (s *Supervisor) alert(sev schema.Severity, kind, msg string, details map[string]any) {
	al := map[string]any{"type": schema.TypeAlert, "alert_id": uuid.NewString(), "severity": sev, "kind": kind,
		"node_id": s.cfg.NodeID, "message": msg, "details": details, "timestamp": time.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.bs.PublishDurable(ctx, schema.AlertSubject(sev, kind), al); err != nil {
		s.log.Warn("alert not stored", "kind", kind, "err", err)
	}
}

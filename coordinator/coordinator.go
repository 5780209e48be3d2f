package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// Config configures a coordinator.
type Config struct {
	ID      string // instance id (generated when empty)
	Version string
	NATS    bus.ConnOptions
	Logger  *slog.Logger

	// LeaseTTL is longer than a JetStream leader election (measured 4.4-6.9 s
	// after a server is killed); LeaseMargin is how long before its lease
	// could expire a leader stops acting, by its own clock.
	// 8 s TTL and a TTL/5 refresh: a dead leader is replaced within ~10 s.
	LeaseTTL    time.Duration // 8 s
	LeaseMargin time.Duration // 2 s

	HeartbeatInterval time.Duration // 1 s: the nodes' interval
	MissedHeartbeats  int           // 3: then suspect, confirmed by a health request
	UnhealthyGrace    time.Duration // 3 s answering but unhealthy before the ladder acts
	Tick              time.Duration // 250 ms between the leader's passes

	Ladder            Ladder
	BreakerCloseAfter time.Duration // 5 min under the threshold closes the breaker
}

// DefaultConfig is a coordinator with DESIGN.md's defaults.
func DefaultConfig() Config {
	return Config{LeaseTTL: 8 * time.Second, LeaseMargin: 2 * time.Second, HeartbeatInterval: time.Second,
		MissedHeartbeats: 3, UnhealthyGrace: 3 * time.Second, Tick: 250 * time.Millisecond,
		Ladder: DefaultLadder(), BreakerCloseAfter: 5 * time.Minute, NATS: bus.ConnOptions{URL: bus.DefaultURL}}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.ID != "" && !schema.ValidToken(c.ID) {
		errs = append(errs, fmt.Errorf("coordinator id %q: letters, digits, '-', '_'", c.ID))
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseMargin <= 0 || c.LeaseMargin >= c.LeaseTTL/2 {
		errs = append(errs, fmt.Errorf("lease ttl must be >= 2s and its margin in (0, ttl/2): %s, %s", c.LeaseTTL, c.LeaseMargin))
	}
	if c.HeartbeatInterval <= 0 || c.MissedHeartbeats < 1 || c.Tick <= 0 || c.UnhealthyGrace < 0 {
		errs = append(errs, errors.New("heartbeat interval, missed heartbeats and tick must be positive"))
	}
	if c.Ladder.GracefulTries < 0 || c.Ladder.EmergencyTries < 0 || c.Ladder.TriesDegraded < 1 || c.Ladder.BackoffStart <= 0 ||
		c.Ladder.BackoffMax < c.Ladder.BackoffStart {
		errs = append(errs, errors.New("escalation ladder: tries >= 0, tries degraded >= 1, 0 < backoff start <= max"))
	}
	return errors.Join(errs...)
}

// Coordinator watches the fleet and, while it leads, runs rolls and the
// escalation ladder. Every coordinator answers reads; actions reach the
// leader (a follower forwards them).
type Coordinator struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	conn  *bus.Conn
	bs    *bus.Store
	state stateStore
	elect *election
	mem   *membership
	brk   *Breaker

	mu       sync.Mutex
	inflight map[string]bool // node ids with a restart this leader sent and awaits
	results  map[string]schema.RestartResult
	rollMu   sync.Mutex    // one pass over the rolls at a time
	kick     chan struct{} // wakes the leader's pass before the next tick
	killed   atomic.Bool
	wg       sync.WaitGroup
}

// New validates cfg and returns a coordinator ready to Run.
func New(cfg Config) (*Coordinator, error) {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("coord-%s-%s", sanitize(host), uuid.NewString()[:8])
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Ladder.Jitter == nil {
		cfg.Ladder.Jitter = func() float64 { return 0.8 + 0.4*rand.Float64() }
	}
	b := NewBreaker()
	b.CloseAfter = cfg.BreakerCloseAfter
	return &Coordinator{cfg: cfg, log: log.With("coordinator", cfg.ID), mem: newMembership(), brk: b,
		inflight: map[string]bool{}, results: map[string]schema.RestartResult{}, kick: make(chan struct{}, 1)}, nil
}

func sanitize(s string) string {
	out := []rune{}
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			out = append(out, r)
		}
	}
	if len(out) > 20 {
		out = out[:20]
	}
	return string(out)
}

// ID is the coordinator's instance id.
func (c *Coordinator) ID() string { return c.cfg.ID }

// IsLeader reports whether this coordinator leads now, with its term.
func (c *Coordinator) IsLeader() (bool, uint64) { return c.elect.isLeader() }

// Run serves until ctx ends. ready, if not nil, is closed once it serves.
func (c *Coordinator) Run(ctx context.Context, ready chan<- struct{}) error {
	c.started = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts := c.cfg.NATS
	opts.Name = "restartcoord-" + c.cfg.ID
	var err error
	if c.bs, err = bus.Open(cctx, opts); err != nil {
		return err
	}
	conn := c.bs.Conn()
	c.conn = conn
	defer conn.Close()
	js := c.bs.JetStream()
	kv, err := js.KeyValue(cctx, schema.BucketCoord)
	if err != nil {
		return err
	}
	c.state = newStateStore(kv)
	nodes, err := js.KeyValue(cctx, schema.BucketNodes)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if err := c.mem.watchRegistry(runCtx, nodes); err != nil {
		return err
	}
	hbSub, err := conn.Subscribe(schema.HeartbeatWildcard, c.mem.heartbeat)
	if err != nil {
		return err
	}
	defer hbSub.Unsubscribe()
	resSub, err := conn.Subscribe(schema.NodeEventSubject("*", schema.EventRestartResult), c.mem.restarted)
	if err != nil {
		return err
	}
	defer resSub.Unsubscribe()
	if b, err := c.state.breaker(cctx); err == nil && b.Open {
		c.brk.open, c.brk.reason = true, b.Reason
		if b.OpenedAt != nil {
			c.brk.openedAt = *b.OpenedAt
		}
	}
	c.elect = &election{js: js, id: c.cfg.ID, ttl: c.cfg.LeaseTTL, margin: c.cfg.LeaseMargin, log: c.log}
	svc, err := conn.Serve(c.serviceConfig())
	if err != nil {
		return err
	}
	private, err := c.servePrivate()
	if err != nil {
		_ = svc.Stop()
		return err
	}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.elect.run(runCtx, func(leader bool, term uint64) {
			c.state.lead(leader) // a new term starts from the bucket
			c.log.Info("leadership", "leader", leader, "term", term)
		})
	}()
	go func() {
		defer c.wg.Done()
		c.leaderLoop(runCtx)
	}()
	c.log.Info("coordinator serving")
	if ready != nil {
		close(ready)
	}
	<-ctx.Done()
	_ = svc.Stop()
	_ = private.Stop()
	stop()
	c.wg.Wait()
	return nil
}

// Kill stops the coordinator as a crash would: it drops its connection
// without releasing its lease (for tests and chaos: another coordinator
// must wait for the lease to expire).
func (c *Coordinator) Kill() {
	c.elect.mu.Lock()
	c.elect.lease = nil
	c.elect.mu.Unlock()
	c.killed.Store(true)
	c.conn.Close()
}

// leaderLoop: while leading, detect failures, climb the ladder, run rolls.
func (c *Coordinator) leaderLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	w := &watches{lastReport: time.Now()} // the first report an hour after taking office
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		ok, term := c.elect.isLeader()
		if !ok || c.killed.Load() {
			continue
		}
		c.detect(ctx)
		planned := c.rollCurrent() // the nodes rolls have out, read once a pass
		c.breakerPass(ctx, planned)
		c.escalate(ctx, term, planned)
		c.rollPass(ctx, term)
		c.slowPasses(ctx, w)
	}
}

// wake runs the leader's pass now (a restart result arrived, a wait ended)
// rather than at the next tick: a roll moves on as soon as it can.
func (c *Coordinator) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// restart sends a restart to a node with this leader's fencing token and
// waits for its result.
func (c *Coordinator) restart(ctx context.Context, node string, req schema.RestartRequest, term uint64) (schema.RestartResult, error) {
	var res schema.RestartResult
	hdr := nats.Header{}
	hdr.Set(schema.HeaderFencingToken, strconv.FormatUint(term, 10))
	rctx, cancel := context.WithTimeout(ctx, schema.Seconds(req.Timeout)+90*time.Second)
	defer cancel()
	err := c.conn.RequestJSON(rctx, schema.NodeSubject(node, schema.OpRestart), req, hdr, &res)
	return res, err
}

// alert publishes an alert and keeps it in ORCH_ALERTS.
func (c *Coordinator) alert(sev schema.Severity, kind, node, msg string, details map[string]any) {
	al := map[string]any{"type": schema.TypeAlert, "alert_id": uuid.NewString(), "severity": sev, "kind": kind,
		"message": msg, "details": details, "timestamp": time.Now().UTC(), "source": c.cfg.ID}
	if node != "" {
		al["node_id"] = node
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.bs.PublishDurable(ctx, schema.AlertSubject(sev, kind), al); err != nil {
		c.log.Warn("alert not stored", "kind", kind, "err", err)
	}
	c.log.Warn("alert", "severity", sev, "kind", kind, "node", node, "message", msg)
}

// event publishes a roll event and keeps it in ORCH_EVENTS.
func (c *Coordinator) event(rollID, kind string, fields map[string]any) {
	ev := map[string]any{"type": schema.TypeRollEvent, "roll_id": rollID, "kind": kind, "timestamp": time.Now().UTC(),
		"coordinator": c.cfg.ID}
	for k, v := range fields {
		ev[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.bs.PublishDurable(ctx, schema.RollEventSubject(rollID, kind), ev); err != nil {
		c.log.Warn("roll event not stored", "roll", rollID, "err", err)
	}
}

var _ = jetstream.KeyValuePut

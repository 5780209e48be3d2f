package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/alerting"
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
	UnhealthyGrace    time.Duration // 3 s unhealthy (or silent past the answer window) before the ladder acts or the breaker counts a node
	Tick              time.Duration // 250 ms between the leader's passes

	Ladder            Ladder
	BreakerCloseAfter time.Duration // 5 min under the threshold closes the breaker

	// LeaderWait is how long an action sent while no coordinator leads (or
	// while the leader named in the lease does not answer) is held for a
	// leader before NOT_LEADER: longer than a leader change (LeaseTTL plus
	// a JetStream election), shorter than a caller's request timeout.
	LeaderWait time.Duration // 15 s

	// Alert conditions (docs/ALERTS.md); zero or less is the default.
	// UnhealthyAlertAfter: a node that answers but reports unhealthy this
	// long raises health_check_failed (a silent one does when it is
	// declared failed). ReportEvery and SLOWindow: how often the leader
	// computes the report, and over what window, for slo_violation and
	// reconnection_rate. MaintenanceEvery: how often it looks for
	// maintenance_due.
	UnhealthyAlertAfter time.Duration // 5 min
	ReportEvery         time.Duration // 1 h
	SLOWindow           time.Duration // 7 days
	MaintenanceEvery    time.Duration // 30 s

	// Alerts is the alert delivery configuration from flags (--alerts-config
	// or --alert-webhook); one set with `restartcoord alerts config set`
	// (kept in ORCH_COORD) takes precedence. Nil and none stored: alerts
	// are kept in ORCH_ALERTS and delivered to nobody. AlertsText is the
	// text it was read from, shown by `alerts config get`.
	Alerts     *alerting.Config
	AlertsText string
	// AlertsHTTP is the client receivers use (nil: one with a 10 s timeout).
	AlertsHTTP *http.Client

	// Metrics, when set, is where the coordinator registers its series
	// (docs/METRICS.md): the fleet gauges, computed at scrape time and
	// emitted only while it leads, and the alerts it raised. Nil: none.
	Metrics prometheus.Registerer
}

// DefaultConfig is a coordinator with DESIGN.md's defaults.
func DefaultConfig() Config {
	return Config{LeaseTTL: 8 * time.Second, LeaseMargin: 2 * time.Second, HeartbeatInterval: time.Second,
		MissedHeartbeats: 3, UnhealthyGrace: 3 * time.Second, Tick: 250 * time.Millisecond,
		Ladder: DefaultLadder(), BreakerCloseAfter: 5 * time.Minute, LeaderWait: 15 * time.Second, NATS: bus.ConnOptions{URL: bus.DefaultURL}}
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
	if c.LeaderWait <= 0 || c.LeaderWait > 5*time.Minute {
		errs = append(errs, fmt.Errorf("leader wait must be in (0, 5m]: %s", c.LeaderWait))
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
	// brkMu orders the breaker's changes with their writes to ORCH_COORD
	// (which cluster health reads): an operator's reset and a pass that
	// opened it again in the same millisecond stored "closed" last while
	// the breaker was open (found by a CI rehearsal). brkUnsaved: the last
	// change was not stored; the next pass stores the state again.
	brkMu      sync.Mutex
	brkUnsaved bool

	mu       sync.Mutex
	inflight map[string]bool // node ids with a restart this leader sent and awaits
	results  map[string]schema.RestartResult
	rollMu   sync.Mutex    // one pass over the rolls at a time
	kick     chan struct{} // wakes the leader's pass before the next tick
	killed   atomic.Bool
	wg       sync.WaitGroup
	bg       atomic.Pointer[context.Context] // Run's context, for background retries (nil outside Run)
	met      *coordMetrics                   // nil without Config.Metrics
	dl       *delivery                       // alert delivery, while leading
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
	c := &Coordinator{cfg: cfg, log: log.With("coordinator", cfg.ID), mem: newMembership(), brk: b,
		inflight: map[string]bool{}, results: map[string]schema.RestartResult{}, kick: make(chan struct{}, 1)}
	c.dl = newDelivery(c)
	var err error
	if c.met, err = newCoordMetrics(cfg.Metrics, c); err != nil {
		return nil, fmt.Errorf("coordinator: registering metrics: %w", err)
	}
	return c, nil
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
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	// A JetStream electing leaders (a server just lost, a partition
	// healing) delays the start rather than failing it (found by the chaos
	// suite: a coordinator restarted then exited on "JetStream system
	// temporarily unavailable", first from the bucket lookups, then, in a
	// later run, from the registry watch).
	var kv jetstream.KeyValue
	err := bus.RetryTransient(cctx, 15*time.Second, func(err error, wait time.Duration) {
		c.log.Warn("coordinator start: JetStream not answering; retrying", "err", err, "in", wait.Round(time.Millisecond))
	}, func() error {
		actx, cancel := context.WithTimeout(cctx, 3*time.Second) // one try
		defer cancel()
		var err error
		if c.bs == nil {
			if c.bs, err = bus.Open(actx, opts); err != nil {
				return err
			}
		}
		js := c.bs.JetStream()
		if kv, err = js.KeyValue(actx, schema.BucketCoord); err != nil {
			return err
		}
		nodes, err := js.KeyValue(actx, schema.BucketNodes)
		if err != nil {
			return err
		}
		// Lives as long as the coordinator; a failed try leaves nothing running.
		return c.mem.watchRegistry(runCtx, nodes)
	})
	if c.bs != nil {
		defer c.bs.Conn().Close()
	}
	if err != nil {
		return err
	}
	conn := c.bs.Conn()
	c.conn = conn
	js := c.bs.JetStream()
	c.state = newStateStore(js, kv)
	c.bg.Store(&runCtx)
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
		var at time.Time
		if b.OpenedAt != nil {
			at = *b.OpenedAt
		}
		c.brk.restore(b.Reason, at)
	}
	c.elect = &election{js: js, id: c.cfg.ID, ttl: c.cfg.LeaseTTL, margin: c.cfg.LeaseMargin, log: c.log}
	c.met.serving() // after c.state and c.elect: what a scrape reads
	svc, err := conn.Serve(c.serviceConfig())
	if err != nil {
		return err
	}
	private, err := c.servePrivate()
	if err != nil {
		_ = svc.Stop()
		return err
	}
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		c.dl.run(runCtx)
	}()
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
	c.bg.Store(nil) // no more background retries: those running end with runCtx
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
		if !ok || c.killed.Load() || !c.hearing(ctx, w) {
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

// hearing reports whether the leader can judge the fleet in this pass. The
// heartbeats and health answers a leader misses while its own server is cut
// off say nothing about the nodes: found by the chaos suite, a leader
// behind a partitioned server saw 5 of 5 nodes unhealthy and opened the
// breaker. So it judges no node
//   - while its own connection fails a round trip,
//   - for an answer window after that, or after its connection moved to
//     another server (the fleet's heartbeats reach it again meanwhile),
//   - and while the whole fleet is silent (fleetSilent).
func (c *Coordinator) hearing(ctx context.Context, w *watches) bool {
	fctx, cancel := context.WithTimeout(ctx, time.Second) // a round trip takes ~100 µs: a second is cut off
	err := c.conn.FlushWithContext(fctx)
	cancel()
	now := time.Now()
	reconnects := c.conn.Stats().Reconnects
	if err != nil || reconnects != w.reconnects {
		if w.blindAt.IsZero() || now.Sub(w.blindAt) > c.answerWindow() {
			c.log.Warn("cut off from NATS (a round trip failed or the connection moved): judging no node until the fleet is heard again",
				"err", err, "reconnects", reconnects)
		}
		w.reconnects, w.blindAt = reconnects, now
		return false
	}
	if !w.blindAt.IsZero() && now.Sub(w.blindAt) < c.answerWindow() {
		return false
	}
	return !c.fleetSilent(now)
}

// fleetSilent: no node at all has been heard within an answer window, for
// less time than a cut-off connection of this coordinator can go unnoticed
// plus two answer windows. Such silence from everyone is first taken for
// the coordinator's own (its server cut off, its pings not timed out yet);
// silence that outlasts that, on a connection that answers, is the fleet's.
// Checked again where a pass judges, since a pass's own JetStream reads can
// wait out a cut-off before it gets there. A coordinator that has heard no
// node since it started counts that silence from its start: one started on
// a server that was itself just restarted heard nobody for a few seconds
// and, once warm, opened the breaker on four nodes "never heard" (found by
// a CI rehearsal of the chaos suite).
func (c *Coordinator) fleetSilent(now time.Time) bool {
	last := c.mem.lastHeard()
	if last.IsZero() {
		last = c.started
	}
	silence := now.Sub(last)
	return silence > c.answerWindow() && silence < c.pingTimeout()+2*c.answerWindow()
}

// pingTimeout is how long a black-holed connection of this coordinator can
// look alive: its ping interval times the pings it lets go unanswered.
func (c *Coordinator) pingTimeout() time.Duration {
	o := c.cfg.NATS.WithDefaults()
	return o.PingInterval * time.Duration(o.MaxPingsOut)
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

// alert publishes a firing alert and keeps it in ORCH_ALERTS.
func (c *Coordinator) alert(sev schema.Severity, kind, node, msg string, details map[string]any) {
	c.publishAlert(schema.Alert{Severity: sev, Kind: kind, Status: schema.AlertStatusFiring, NodeID: node,
		Message: msg, Details: details})
}

// resolve publishes that the condition of kind on node (empty: the cluster)
// has cleared, at the kind's severity, so a receiver closes what it opened.
func (c *Coordinator) resolve(kind, node, msg string, details map[string]any) {
	c.publishAlert(schema.Alert{Severity: schema.AlertKinds[kind], Kind: kind, Status: schema.AlertStatusResolved,
		NodeID: node, Message: msg, Details: details})
}

func (c *Coordinator) publishAlert(a schema.Alert) {
	a.Type, a.AlertID, a.Timestamp, a.Source = schema.TypeAlert, uuid.NewString(), time.Now().UTC(), c.cfg.ID
	if a.RollID == "" && a.NodeID == "" {
		if id, ok := a.Details["roll_id"].(string); ok {
			a.RollID = id
		}
	}
	c.log.Warn("alert", "severity", a.Severity, "kind", a.Kind, "status", a.Status, "node", a.NodeID, "message", a.Message)
	if a.Firing() {
		c.met.alerted(a.Severity, a.Kind)
	}
	c.keep("alert "+a.Kind, schema.AlertSubject(a.Severity, a.Kind), "alert-"+a.AlertID, a)
}

// event publishes a roll event and keeps it in ORCH_EVENTS.
func (c *Coordinator) event(rollID, kind string, fields map[string]any) {
	ev := map[string]any{"type": schema.TypeRollEvent, "roll_id": rollID, "kind": kind, "timestamp": time.Now().UTC(),
		"coordinator": c.cfg.ID}
	for k, v := range fields {
		ev[k] = v
	}
	c.keep("roll event "+rollID+" "+kind, schema.RollEventSubject(rollID, kind), "roll-event-"+uuid.NewString(), ev)
}

// keepFor is how long an alert or event JetStream does not acknowledge is
// tried again, in the background: less than the streams' 2 min duplicate
// window, so a try that landed unacknowledged is not kept twice.
const keepFor = 90 * time.Second

// keep stores v in its stream: a first try of up to 5 s in order with the
// caller (alerts and events are read in the order they happened), then, if
// JetStream did not acknowledge it (a server lost, an election), tries again
// in the background for keepFor, until the coordinator stops. An alert
// published while NATS fails over is then not lost.
func (c *Coordinator) keep(what, subj, msgID string, v any) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := c.bs.Keep(ctx, subj, msgID, v)
	cancel()
	if err == nil {
		return
	}
	bg := c.bg.Load()
	if bg == nil {
		c.log.Warn(what+" not stored", "err", err)
		return
	}
	c.log.Warn(what+" not stored yet; trying again in the background", "err", err, "for", keepFor)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(*bg, keepFor)
		defer cancel()
		if err := c.bs.Keep(ctx, subj, msgID, v); err != nil {
			c.log.Error(what+" lost: JetStream did not store it", "err", err, "tried_for", keepFor)
			return
		}
		c.log.Info(what + " stored after a retry")
	}()
}

var _ = jetstream.KeyValuePut

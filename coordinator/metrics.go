package coordinator

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/schema"
)

// The states restartcoord_fleet_nodes counts; each node is in one.
const (
	FleetHealthy     = "healthy"     // answering, worker healthy, no restart running
	FleetUnhealthy   = "unhealthy"   // answering, worker not healthy, no restart running
	FleetRestarting  = "restarting"  // a restart is under way
	FleetUnreachable = "unreachable" // not heard within the answer window, not (yet) declared failed
	FleetFailed      = "failed"      // declared failed: missed heartbeats and no answer to health
)

var fleetStates = []string{FleetHealthy, FleetUnhealthy, FleetRestarting, FleetUnreachable, FleetFailed}

// rollNodeStates are the labels of restartcoord_roll_nodes.
var rollNodeStates = []string{"done", "current", "failed", "total"}

// fleetFacts is what the leader's fleet gauges say, read at scrape time.
type fleetFacts struct {
	Leader      bool
	Nodes       map[string]int // by fleet state
	Levels      map[int]int    // nodes by escalation level (LevelNone..LevelEngineering)
	BreakerOpen bool
	// RollsRead: the rolls could be read (JetStream answered in time);
	// without it the roll gauges are left out of the scrape.
	RollsRead bool
	Running   int            // rolls running
	Paused    int            // rolls paused
	RollNodes map[string]int // over running and paused rolls: done, current, failed, total
}

// coordMetrics are a coordinator's series (docs/METRICS.md). A nil
// *coordMetrics measures nothing.
type coordMetrics struct {
	alerts        *prometheus.CounterVec // severity, kind
	notifications *prometheus.CounterVec // receiver, result
	fleet         *fleetCollector
}

// newCoordMetrics registers c's series on reg (nil: no metrics). A
// coordinator created again on the same registerer takes the series over.
func newCoordMetrics(reg prometheus.Registerer, c *Coordinator) (*coordMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &coordMetrics{
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "restartcoord_alerts_total",
			Help: "Alerts this coordinator raised since it started, by severity and kind."}, []string{"severity", "kind"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "restartcoord_alert_notifications_total",
			Help: "Tries to deliver an alert notification, by receiver and result (delivered, retry, failed)."},
			[]string{"receiver", "result"}),
		fleet: newFleetCollector(),
	}
	var errs []error
	m.alerts = register(reg, m.alerts, &errs)
	m.notifications = register(reg, m.notifications, &errs)
	m.fleet = register(reg, m.fleet, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.fleet.facts = c.fleetFacts
	return m, nil
}

// register registers col, or returns the collector of its kind already
// registered with the same descriptors.
func register[C prometheus.Collector](reg prometheus.Registerer, col C, errs *[]error) C {
	err := reg.Register(col)
	if err == nil {
		return col
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old
		}
	}
	*errs = append(*errs, err)
	return col
}

// alerted counts an alert; kinds are the constants of the code.
func (m *coordMetrics) alerted(sev schema.Severity, kind string) {
	if m != nil {
		m.alerts.WithLabelValues(string(sev), kind).Inc()
	}
}

// notified counts one try of a notification to receiver.
func (m *coordMetrics) notified(receiver string, err error) {
	if m == nil {
		return
	}
	result := "delivered"
	if err != nil {
		result = "failed"
		if retry, _ := notify.RetryAfter(err); retry {
			result = "retry"
		}
	}
	m.notifications.WithLabelValues(receiver, result).Inc()
}

// serving says Run has set up what fleetFacts reads (its election and
// state): scrapes before that see a follower.
func (m *coordMetrics) serving() {
	if m != nil {
		m.fleet.serving.Store(true)
	}
}

// fleetCollector computes the fleet gauges at scrape time from the
// coordinator's view (no loop runs for them between scrapes). Only the
// leader emits them: followers see the same fleet, and a sum over
// coordinators would count it twice. Every coordinator emits
// restartcoord_coordinator_leader.
type fleetCollector struct {
	serving atomic.Bool
	// facts reads the coordinator; the unit tests give fixed ones.
	facts func(ctx context.Context) fleetFacts

	leader, nodes, levels, breaker, running, paused, rollNodes, ratio *prometheus.Desc
}

func newFleetCollector() *fleetCollector {
	return &fleetCollector{
		leader: prometheus.NewDesc("restartcoord_coordinator_leader",
			"1 while this coordinator leads (and emits the fleet gauges), else 0.", nil, nil),
		nodes: prometheus.NewDesc("restartcoord_fleet_nodes",
			"Nodes known to the leader, by state (healthy, unhealthy, restarting, unreachable, failed).", []string{"state"}, nil),
		levels: prometheus.NewDesc("restartcoord_fleet_escalation_level",
			"Nodes at each level of the escalation ladder (0 none, 1 automated, 2 operations: degraded, 3 engineering: quarantined).",
			[]string{"level"}, nil),
		breaker: prometheus.NewDesc("restartcoord_circuit_breaker_open",
			"1 while the cluster circuit breaker is open (automatic restarts and rolls stopped), else 0.", nil, nil),
		running: prometheus.NewDesc("restartcoord_rolls_in_progress",
			"Rolling restarts in progress (running or paused).", nil, nil),
		paused: prometheus.NewDesc("restartcoord_rolls_paused",
			"Rolling restarts paused (for a failed node, the breaker or an operator).", nil, nil),
		rollNodes: prometheus.NewDesc("restartcoord_roll_nodes",
			"Nodes of the rolls in progress, summed over them: done, current (being restarted), failed, and total planned.",
			[]string{"state"}, nil),
		ratio: prometheus.NewDesc("restartcoord_roll_progress_ratio",
			"Done over total planned nodes of the rolls in progress, summed over them (absent without a roll).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (fc *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{fc.leader, fc.nodes, fc.levels, fc.breaker, fc.running, fc.paused, fc.rollNodes, fc.ratio} {
		ch <- d
	}
}

// scrapeRead bounds what a scrape reads from JetStream (the rolls; ladder
// states the leader has not cached).
const scrapeRead = 2 * time.Second

// Collect implements prometheus.Collector.
func (fc *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	var f fleetFacts
	if fc.serving.Load() && fc.facts != nil {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeRead)
		f = fc.facts(ctx)
		cancel()
	}
	fc.emit(ch, f)
}

// emit turns facts into metrics: everything but the leader flag only on
// the leader.
func (fc *fleetCollector) emit(ch chan<- prometheus.Metric, f fleetFacts) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if !f.Leader {
		g(fc.leader, 0)
		return
	}
	g(fc.leader, 1)
	for _, s := range fleetStates {
		g(fc.nodes, float64(f.Nodes[s]), s)
	}
	for l := LevelNone; l <= LevelEngineering; l++ {
		g(fc.levels, float64(f.Levels[l]), strconv.Itoa(l))
	}
	g(fc.breaker, b2f(f.BreakerOpen))
	if !f.RollsRead {
		return
	}
	g(fc.running, float64(f.Running+f.Paused))
	g(fc.paused, float64(f.Paused))
	for _, s := range rollNodeStates {
		g(fc.rollNodes, float64(f.RollNodes[s]), s)
	}
	if total := f.RollNodes["total"]; total > 0 {
		g(fc.ratio, float64(f.RollNodes["done"])/float64(total))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// fleetFacts reads the leader's view: membership (memory), ladder states
// (the leader's cache, refreshed every pass) and the rolls (ORCH_COORD, as
// cluster health reads them). Called only once Run has set up.
func (c *Coordinator) fleetFacts(ctx context.Context) fleetFacts {
	f := fleetFacts{Nodes: map[string]int{}, Levels: map[int]int{}, RollNodes: map[string]int{}}
	if f.Leader, _ = c.elect.isLeader(); !f.Leader {
		return f
	}
	now := time.Now()
	for _, v := range c.mem.snapshot() {
		f.Nodes[fleetState(v, v.member(c.answerWindow(), now))]++
		if ns, _, err := c.state.getNode(ctx, v.Info.NodeID); err == nil {
			f.Levels[min(max(ns.Level, LevelNone), LevelEngineering)]++
		}
	}
	f.BreakerOpen, _ = c.brk.Open()
	rolls, err := c.state.rolls(ctx)
	if err != nil {
		return f
	}
	f.RollsRead = true
	for _, r := range rolls {
		if r.State != schema.RollRunning && r.State != schema.RollPaused {
			continue
		}
		if r.State == schema.RollPaused {
			f.Paused++
		} else {
			f.Running++
		}
		for _, w := range r.Plan.Waves {
			f.RollNodes["total"] += len(w)
		}
		f.RollNodes["done"] += len(r.Done)
		f.RollNodes["current"] += len(r.Current)
		f.RollNodes["failed"] += len(r.Failed)
	}
	return f
}

// fleetState is the one state restartcoord_fleet_nodes counts a node in.
func fleetState(v NodeView, m Member) string {
	switch {
	case v.Failed:
		return FleetFailed
	case !m.Answering:
		return FleetUnreachable
	case m.Restarting:
		return FleetRestarting
	case m.Healthy:
		return FleetHealthy
	default:
		return FleetUnhealthy
	}
}

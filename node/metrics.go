package node

import (
	"errors"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/schema"
)

// The kinds of restart restartcoord_restarts_total counts, by how the
// worker was replaced: a fixed set, whatever the request's reason.
const (
	// RestartKindGraceful: drained (jobs suspended, snapshot written), then
	// replaced. A rolling restart is one of these.
	RestartKindGraceful = "graceful"
	// RestartKindEmergency: killed and replaced, its state restored from the
	// journal; also a graceful restart whose drain ran out of time.
	RestartKindEmergency = "emergency"
	// RestartKindCrashRecovery: the supervisor replacing a worker that
	// exited or that the watchdog killed.
	RestartKindCrashRecovery = "crash_recovery"
)

// restartKind is the kind of a restart: how it ended up being done.
func restartKind(res *schema.RestartResult, reason schema.Reason) string {
	switch {
	case reason == schema.ReasonCrashRecovery:
		return RestartKindCrashRecovery
	case res.Graceful:
		return RestartKindGraceful
	default:
		return RestartKindEmergency
	}
}

// nodeMetrics are the series of one supervisor (docs/METRICS.md). They carry
// no node label: the registerer the node is given adds it
// (prometheus.WrapRegistererWith), so that one process can serve several
// nodes. A nil *nodeMetrics measures nothing; its methods cost a nil check.
type nodeMetrics struct {
	restarts      *prometheus.CounterVec   // kind, result
	duration      *prometheus.HistogramVec // kind
	phases        *prometheus.HistogramVec // phase
	watchdogKills prometheus.Counter
	leaseHeld     prometheus.Gauge
	buffered      prometheus.Gauge
	worker        *workerCollector
}

// newNodeMetrics registers the series of s on reg (nil: no metrics). A
// supervisor created again for the same node on the same registerer (a
// node restarted inside a process) takes over the series already there:
// its counters go on from where the previous one left them.
func newNodeMetrics(reg prometheus.Registerer, s *Supervisor) (*nodeMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &nodeMetrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "restartcoord_restarts_total",
			Help: "Restarts of the worker that ended, by kind (graceful, emergency, crash_recovery) and result (success, failure)."},
			[]string{"kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "restartcoord_restart_duration_seconds",
			Help:    "Duration of restarts from request to result, by kind, as the restart result reports it.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300}},
			[]string{"kind"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "restartcoord_restart_phase_duration_seconds",
			Help:    "Time restarts spent in each phase of the restart state machine.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}},
			[]string{"phase"}),
		watchdogKills: prometheus.NewCounter(prometheus.CounterOpts{Name: "restartcoord_watchdog_kills_total",
			Help: "Workers killed by the supervisor's watchdog because they stopped answering its pings."}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "restartcoord_node_lease_held",
			Help: "1 while this supervisor holds its node-id lease (valid by its own clock), else 0."}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "restartcoord_buffered_requests",
			Help: "Client requests waiting in the node's request buffer (read every 5 heartbeat intervals)."}),
		worker: newWorkerCollector(),
	}
	var errs []error
	m.restarts = register(reg, m.restarts, &errs)
	m.duration = register(reg, m.duration, &errs)
	m.phases = register(reg, m.phases, &errs)
	m.watchdogKills = register(reg, m.watchdogKills, &errs)
	m.leaseHeld = register(reg, m.leaseHeld, &errs)
	m.buffered = register(reg, m.buffered, &errs)
	m.worker = register(reg, m.worker, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.worker.src.Store(s)
	// Every kind and result from zero, so that increase() and rate() see a
	// node's first restart of each.
	for _, k := range []string{RestartKindGraceful, RestartKindEmergency, RestartKindCrashRecovery} {
		for _, r := range []string{"success", "failure"} {
			m.restarts.WithLabelValues(k, r)
		}
	}
	return m, nil
}

// register registers c, or returns the collector of the same kind already
// registered with the same descriptors.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old
		}
	}
	*errs = append(*errs, err)
	return c
}

// restarted counts a restart that ended.
func (m *nodeMetrics) restarted(op *restartOp) {
	if m == nil {
		return
	}
	kind, result := restartKind(&op.res, op.req.Reason), "failure"
	if op.res.Success {
		result = "success"
	}
	m.restarts.WithLabelValues(kind, result).Inc()
	m.duration.WithLabelValues(kind).Observe(op.res.Duration)
}

// phaseEnded records the time a restart spent in phase p. Phases come from
// the worker too: one outside the contract's list (a worker of another
// version) is not recorded, so the label stays a fixed set.
func (m *nodeMetrics) phaseEnded(p schema.Phase, seconds float64) {
	if m == nil || !slices.Contains(schema.Phases, p) {
		return
	}
	m.phases.WithLabelValues(string(p)).Observe(seconds)
}

func (m *nodeMetrics) watchdogKilled() {
	if m != nil {
		m.watchdogKills.Inc()
	}
}

func (m *nodeMetrics) lease(held bool) {
	if m == nil {
		return
	}
	if held {
		m.leaseHeld.Set(1)
	} else {
		m.leaseHeld.Set(0)
	}
}

func (m *nodeMetrics) bufferedRequests(n int) {
	if m != nil {
		m.buffered.Set(float64(n))
	}
}

// workerCollector turns the supervisor's last reading of its worker (taken
// for every heartbeat) into gauges at scrape time: nothing is computed
// between scrapes, and nothing is asked of the worker for a scrape.
type workerCollector struct {
	src atomic.Pointer[Supervisor]

	tasks, activeTasks, jobs, sessions, activeSessions, pending, replayed *prometheus.Desc
	snapBytes, snapStored, snapTime, snapshots, workerStart               *prometheus.Desc
}

func newWorkerCollector() *workerCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &workerCollector{
		tasks:          d("restartcoord_tasks", "Tasks the worker holds, in any status."),
		activeTasks:    d("restartcoord_tasks_active", "Tasks in status active."),
		jobs:           d("restartcoord_jobs_running", "Jobs (tasks run step by step) running now."),
		sessions:       d("restartcoord_sessions", "Client sessions the worker holds."),
		activeSessions: d("restartcoord_sessions_active", "Client sessions active within the last 60 seconds."),
		pending:        d("restartcoord_journal_pending_writes", "Journal writes sent and not yet acknowledged by JetStream."),
		replayed: d("restartcoord_journal_replayed_entries",
			"Journal entries the serving worker replayed over its snapshot when it started."),
		snapBytes:   d("restartcoord_snapshot_size_bytes", "Size of the worker's newest snapshot, uncompressed."),
		snapStored:  d("restartcoord_snapshot_stored_bytes", "Size of the worker's newest snapshot as kept in the object store (compressed)."),
		snapTime:    d("restartcoord_snapshot_timestamp_seconds", "When the worker's newest snapshot was taken, in seconds since the Unix epoch."),
		snapshots:   d("restartcoord_snapshots_retained", "Snapshots (backups) of the node kept in the object store."),
		workerStart: d("restartcoord_worker_start_time_seconds", "When the worker process started, in seconds since the Unix epoch."),
	}
}

// Describe implements prometheus.Collector.
func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.tasks, c.activeTasks, c.jobs, c.sessions, c.activeSessions, c.pending,
		c.replayed, c.snapBytes, c.snapStored, c.snapTime, c.snapshots, c.workerStart} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: nothing before the first reading
// of a worker; after that the last one, kept while no worker answers.
func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Load()
	if s == nil {
		return
	}
	s.mu.Lock()
	st, replayed := s.lastStats, s.ready.JournalReplayed
	s.mu.Unlock()
	if st == nil {
		return
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	g(c.tasks, float64(st.Tasks))
	g(c.activeTasks, float64(st.ActiveTasks))
	g(c.jobs, float64(st.RunningJobs))
	g(c.sessions, float64(len(st.Sessions)))
	g(c.activeSessions, float64(st.ActiveSessions))
	g(c.pending, float64(st.PendingWrites))
	g(c.replayed, float64(replayed))
	g(c.snapshots, float64(st.Backups))
	if !st.StartedAt.IsZero() {
		g(c.workerStart, float64(st.StartedAt.UnixNano())/1e9)
	}
	if sn := st.LastSnapshot; sn != nil {
		g(c.snapBytes, float64(sn.SizeBytes))
		g(c.snapStored, float64(sn.StoredBytes))
		g(c.snapTime, float64(sn.TakenAt.UnixNano())/1e9)
	}
}

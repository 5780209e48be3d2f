package node_test

import (
	"fmt"
	"maps"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/internal/metrics"
	"github.com/restartcoord/restartcoord/internal/metrics/metricstest"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// restartCounts is restartcoord_restarts_total by kind and result, every
// series of it: a restart that moved another series than its own shows.
func restartCounts(graceful, emergency, crash float64) map[string]float64 {
	return map[string]float64{
		"kind=graceful,result=success": graceful, "kind=graceful,result=failure": 0,
		"kind=emergency,result=success": emergency, "kind=emergency,result=failure": 0,
		"kind=crash_recovery,result=success": crash, "kind=crash_recovery,result=failure": 0,
	}
}

// series is metricstest.Series without the node label, failing the test on
// an error.
func series(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	got, err := metricstest.Series(g, name, "node")
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return got
}

func wantSeries(t *testing.T, g prometheus.Gatherer, name string, want map[string]float64) {
	t.Helper()
	if got := series(t, g, name); !maps.Equal(got, want) {
		t.Fatalf("%s: got %v, want %v", name, got, want)
	}
}

// TestMetricsCountRestartsAndWatchdogKills: a graceful restart, an
// emergency restart and a watchdog kill (SIGSTOP) of one node each move
// their own series by exactly one and no other; the phase histogram
// accounts for the restart's time; the worker's gauges and the lease
// follow; and everything the node registers passes promlint. The node's
// registerer is wrapped with its node label, as restartcoord node and dev
// do.
func TestMetricsCountRestartsAndWatchdogKills(t *testing.T) {
	e := newEnv(t)
	reg := metrics.NewRegistry()
	cfg := e.fastConfig("n1")
	cfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"node": "n1"}, reg)
	e.startNode(cfg)
	c := e.client("c1", "n1")
	createTasks(t, newLedger(), 20, 2, func(int) schema.TaskCreateArgs { return schema.TaskCreateArgs{Title: "t"} }, c)
	wantSeries(t, reg, "restartcoord_restarts_total", restartCounts(0, 0, 0))
	wantSeries(t, reg, "restartcoord_node_lease_held", map[string]float64{"": 1})

	r := e.restart("n1", map[string]any{"reason": "manual_request"})
	if !r.Success || !r.Graceful {
		t.Fatalf("graceful restart: %+v", r)
	}
	// The result is counted before the reply is sent: no polling.
	wantSeries(t, reg, "restartcoord_restarts_total", restartCounts(1, 0, 0))
	wantSeries(t, reg, "restartcoord_restart_duration_seconds", map[string]float64{"kind=graceful": 1})
	// Every phase the restart went through once, and together they take
	// the restart's duration (phases follow each other without a gap).
	phases := series(t, reg, "restartcoord_restart_phase_duration_seconds")
	for _, p := range []schema.Phase{schema.PhasePreparing, schema.PhaseSerializingState, schema.PhaseStartingProcess} {
		if phases["phase="+string(p)] != 1 {
			t.Fatalf("phase %s observed %v times, want 1 (all: %v)", p, phases["phase="+string(p)], phases)
		}
	}
	if sum := phaseSeconds(t, reg); math.Abs(sum-r.Duration) > 0.05 {
		t.Fatalf("phases add up to %.3fs, the restart took %.3fs", sum, r.Duration)
	}

	r = e.restart("n1", map[string]any{"graceful": false, "reason": "emergency_shutdown"})
	if !r.Success || r.Graceful {
		t.Fatalf("emergency restart: %+v", r)
	}
	wantSeries(t, reg, "restartcoord_restarts_total", restartCounts(1, 1, 0))
	wantSeries(t, reg, "restartcoord_restart_duration_seconds", map[string]float64{"kind=graceful": 1, "kind=emergency": 1})
	wantSeries(t, reg, "restartcoord_watchdog_kills_total", map[string]float64{"": 0})

	pid := e.health("n1").WorkerPID
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the watchdog's crash recovery counted", func() bool {
		return series(t, reg, "restartcoord_restarts_total")["kind=crash_recovery,result=success"] == 1
	})
	wantSeries(t, reg, "restartcoord_restarts_total", restartCounts(1, 1, 1))
	wantSeries(t, reg, "restartcoord_watchdog_kills_total", map[string]float64{"": 1})
	wantSeries(t, reg, "restartcoord_node_lease_held", map[string]float64{"": 1})
	if pidAlive(pid) {
		t.Fatalf("frozen worker %d still exists", pid)
	}

	// The worker's gauges come from the supervisor's last reading: soon the
	// new worker's, started after the frozen one was stopped.
	newPID := e.health("n1").WorkerPID
	waitFor(t, 10*time.Second, "the new worker's reading", func() bool {
		started := series(t, reg, "restartcoord_worker_start_time_seconds")[""]
		return started > float64(stopped.UnixNano())/1e9 && series(t, reg, "restartcoord_tasks")[""] == 20
	})
	if got := series(t, reg, "restartcoord_sessions")[""]; got < 1 {
		t.Fatalf("%v sessions, want the client's", got)
	}
	if got := series(t, reg, "restartcoord_snapshot_size_bytes")[""]; got <= 0 {
		t.Fatalf("snapshot size %v after a graceful restart, want > 0 (worker %d)", got, newPID)
	}

	problems, err := metricstest.Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// phaseSeconds is the sum of restartcoord_restart_phase_duration_seconds
// over every phase.
func phaseSeconds(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "restartcoord_restart_phase_duration_seconds" {
			for _, m := range mf.GetMetric() {
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return sum
}

// TestMetricsOfTwoNodesShareARegistry: two supervisors in one process (as
// in restartcoord dev) register the same series, each through a registerer
// wrapped with its node label; a supervisor created again for a node takes
// its series over instead of failing; without a registerer nothing is
// registered.
func TestMetricsOfTwoNodesShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, id := range []string{"n1", "n2", "n1"} {
		cfg := node.DefaultConfig(id)
		cfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, reg)
		if _, err := node.NewSupervisor(cfg); err != nil {
			t.Fatalf("supervisor %s: %v", id, err)
		}
	}
	got, err := metricstest.Series(reg, "restartcoord_restarts_total")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 12 || got["kind=graceful,node=n1,result=success"] != 0 || got["kind=graceful,node=n2,result=success"] != 0 {
		t.Fatalf("restartcoord_restarts_total: got %v, want 6 series per node", got)
	}
	if _, err := node.NewSupervisor(node.DefaultConfig("n3")); err != nil {
		t.Fatal(err)
	}
	if got, _ := metricstest.Series(reg, "restartcoord_restarts_total"); len(got) != 12 {
		t.Fatalf("a node without a registerer registered series: %v", got)
	}
}

// BenchmarkMetricsGracefulRestart10k: the cost of a node's metrics on
// BenchmarkGracefulRestart10k's restart, in one run. Two nodes of 10,000
// tasks of ~1 KB on one server, one without metrics and one with them
// (its registry gathered every second, as a scrape would, 15 times
// Prometheus's default rate), restarted gracefully in turn, b.N times each,
// the order swapped every iteration. Reported: each one's median and p99
// restart duration (the restart result's) and the ratio of the medians
// (target <= 1.05).
//
//	go test ./node -run '^$' -bench MetricsGracefulRestart10k -benchtime 10x -timeout 30m
func BenchmarkMetricsGracefulRestart10k(b *testing.B) {
	e := newBenchEnv(b)
	reg := metrics.NewRegistry()
	for i, id := range []string{"off-1", "on-1"} {
		cfg := e.config(id)
		if id == "on-1" {
			cfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, reg)
		}
		e.startNode(cfg)
		e.fill(id, i*benchTasks, benchTasks)                      // clients and titles of their own
		e.restart(id, map[string]any{"reason": "manual_request"}) // a snapshot to restore from, as the other benchmark's set-up
	}
	stop := make(chan struct{})
	scraped := make(chan int)
	go func() {
		n := 0
		defer func() { scraped <- n }()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if _, err := reg.Gather(); err != nil {
				b.Errorf("gather: %v", err)
			}
			n++
		}
	}()
	b.Run(fmt.Sprintf("tasks=%d", benchTasks), func(b *testing.B) {
		var off, on samples
		restart := func(id string, into *samples) {
			r := e.restart(id, map[string]any{"reason": "manual_request"})
			if r.State.TasksRestored != benchTasks || !r.State.Preserved || !r.Graceful {
				b.Fatalf("%s: %+v", id, r)
			}
			*into = append(*into, time.Duration(r.Duration*float64(time.Second)))
		}
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 {
				restart("off-1", &off)
				restart("on-1", &on)
			} else {
				restart("on-1", &on)
				restart("off-1", &off)
			}
		}
		off.report(b, "off")
		on.report(b, "on")
		b.ReportMetric(float64(on.quantile(0.5))/float64(off.quantile(0.5)), "on/off-median")
		b.ReportMetric(0, "ns/op") // two restarts an iteration: the figures above are per restart
	})
	close(stop)
	b.Logf("registry gathered %d times", <-scraped)
	if got, _ := metricstest.Series(reg, "restartcoord_restarts_total"); got["kind=graceful,node=on-1,result=success"] < 2 {
		b.Fatalf("the node with metrics counted %v", got)
	}
}

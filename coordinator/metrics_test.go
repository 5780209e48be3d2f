package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/internal/metrics"
	"github.com/restartcoord/restartcoord/internal/metrics/metricstest"
	"github.com/restartcoord/restartcoord/schema"
)

func gatherSeries(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	got, err := metricstest.Series(g, name, "node")
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return got
}

// TestFleetMetricsComeFromTheLeaderOnly: two nodes and two coordinators on
// one server; the nodes and the leader share a registry, as in
// restartcoord dev. The leader emits the fleet gauges from its view (both
// nodes healthy, at ladder level 0, breaker closed, no roll); the follower
// emits restartcoord_coordinator_leader 0 and none of them. promlint finds
// nothing in either registry, and every metric name the Grafana dashboard
// queries is one the code registers.
func TestFleetMetricsComeFromTheLeaderOnly(t *testing.T) {
	f := newFleet(t, false)
	reg := metrics.NewRegistry()
	rec := metricstest.NewRecorder(reg)
	for _, id := range []string{"n01", "n02"} {
		cfg := f.nodeConfig(id, 0)
		cfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, rec)
		f.runNode(cfg).awaitReady(t)
	}
	cfg := f.coordConfig("c1")
	cfg.Metrics = rec
	c1 := f.startCoordinatorWith(cfg)
	f.waitFor(15*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	followerReg := metrics.NewRegistry()
	cfg = f.coordConfig("c2")
	cfg.Metrics = followerReg
	f.startCoordinatorWith(cfg)

	// One restart, so that the node's histograms have series to lint and
	// to check the dashboard's _bucket queries against.
	var r schema.RestartResult
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.conn.RequestJSON(ctx, schema.NodeSubject("n01", schema.OpRestart), map[string]any{"reason": "manual_request"}, nil, &r); err != nil || !r.Success {
		t.Fatalf("restart: %v %+v", err, r)
	}
	want := map[string]float64{"state=healthy": 2, "state=unhealthy": 0, "state=restarting": 0, "state=unreachable": 0, "state=failed": 0}
	f.waitFor(10*time.Second, "the leader to see both nodes healthy", func() bool {
		return maps.Equal(gatherSeries(t, reg, "restartcoord_fleet_nodes"), want)
	})
	for name, want := range map[string]map[string]float64{
		"restartcoord_coordinator_leader":     {"": 1},
		"restartcoord_fleet_escalation_level": {"level=0": 2, "level=1": 0, "level=2": 0, "level=3": 0},
		"restartcoord_circuit_breaker_open":   {"": 0},
		"restartcoord_rolls_in_progress":      {"": 0},
		"restartcoord_roll_progress_ratio":    {},
	} {
		if got := gatherSeries(t, reg, name); !maps.Equal(got, want) {
			t.Errorf("leader: %s: got %v, want %v", name, got, want)
		}
	}
	// Both nodes' series, each under its own node label, in one registry.
	if got, _ := metricstest.Series(reg, "restartcoord_restarts_total"); got["kind=graceful,node=n01,result=success"] != 1 ||
		got["kind=graceful,node=n02,result=success"] != 0 || len(got) != 12 {
		t.Errorf("restartcoord_restarts_total of two nodes: got %v", got)
	}
	mfs, err := followerReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metricstest.Prefix) && mf.GetName() != "restartcoord_coordinator_leader" {
			t.Errorf("the follower emits %s", mf.GetName())
		}
	}
	if got := gatherSeries(t, followerReg, "restartcoord_coordinator_leader"); !maps.Equal(got, map[string]float64{"": 0}) {
		t.Errorf("follower: restartcoord_coordinator_leader: got %v, want 0", got)
	}
	for _, g := range []prometheus.Gatherer{reg, followerReg} {
		problems, err := metricstest.Lint(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	checkDashboard(t, "../deploy/grafana/restartcoord.json", rec.Names(), mfs, reg)
}

// checkDashboard fails the test for every metric name a PromQL expression of
// the Grafana dashboard uses that no registered collector describes (a
// histogram's _bucket, _sum and _count count as its own), and for an
// expression that uses none of the project's series.
func checkDashboard(t *testing.T, path string, described []string, extra []*dto.MetricFamily, g prometheus.Gatherer) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, n := range described {
		known[n] = true
	}
	for _, mf := range append(mfs, extra...) {
		known[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[mf.GetName()+s] = true
			}
		}
	}
	exprs := promQL(dash)
	if len(exprs) < 10 {
		t.Fatalf("%s: %d PromQL expressions found, want the dashboard's panels", path, len(exprs))
	}
	for _, e := range exprs {
		names := metricNames(e)
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, metricstest.Prefix) }) {
			t.Errorf("dashboard query %q uses no restartcoord_ series", e)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("dashboard query %q uses %s, which the code does not register", e, n)
			}
		}
	}
}

// promQL collects the dashboard's queries: the targets' "expr" and the
// template variables' label_values(...) queries.
func promQL(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && (k == "expr" || (k == "query" && strings.HasPrefix(s, "label_values("))) {
				out = append(out, s)
			} else {
				out = append(out, promQL(val)...)
			}
		}
	case []any:
		for _, val := range x {
			out = append(out, promQL(val)...)
		}
	}
	return out
}

var (
	quoted     = regexp.MustCompile(`"(\\.|[^"\\])*"|\[[^\]]*\]`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	// What is not a metric name: PromQL's functions and keywords, the label
	// names the dashboard groups by or matches, and Grafana's variables
	// (their $ removed with the rest).
	notMetric = map[string]bool{"sum": true, "max": true, "min": true, "avg": true, "by": true, "without": true,
		"rate": true, "increase": true, "histogram_quantile": true, "time": true, "label_values": true,
		"le": true, "kind": true, "result": true, "phase": true, "state": true, "level": true, "node": true,
		"instance": true, "severity": true, "__rate_interval": true, "__range": true}
)

// metricNames are the metric names in a PromQL expression: its identifiers
// less the strings and ranges, the functions, keywords and label names.
func metricNames(expr string) []string {
	var out []string
	for _, id := range identifier.FindAllString(quoted.ReplaceAllString(expr, " "), -1) {
		if !notMetric[id] {
			out = append(out, id)
		}
	}
	return out
}

// benchMetricsCoord makes the test binary run a coordinator
// (DefaultConfig) for BenchmarkHeartbeatFanInMetrics: "off" without
// metrics, or an address to serve its metrics at. A variable of its own:
// bench_test.go's init refuses roles it does not know.
const benchMetricsCoord = "RESTARTCOORD_BENCH_METRICS_COORD"

func init() {
	if addr := os.Getenv(benchMetricsCoord); addr != "" {
		os.Exit(benchMetricsCoordMain(addr))
	}
}

func benchMetricsCoordMain(addr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := coordinator.DefaultConfig()
	cfg.NATS.URL = os.Getenv(benchURL)
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if addr != "off" {
		reg := metrics.NewRegistry()
		cfg.Metrics = reg
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		srv := &http.Server{Handler: metrics.Handler(reg), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	co, err := coordinator.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := co.Run(ctx, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// BenchmarkHeartbeatFanInMetrics: the cost of the coordinator's metrics
// under BenchmarkHeartbeatFanIn's load (1,000 simulated nodes heartbeating
// once a second), in one run. Each iteration starts a coordinator process
// without metrics, then one with them, scraped every second (15 times
// Prometheus's default rate); each leads in turn, sees the 1,000 nodes,
// and the CPU time it spends in a window (10 s, or
// RESTARTCOORD_BENCH_FANIN_WINDOW) per heartbeat published is its figure.
// Reported: µs per heartbeat off and on, their ratio (target <= 1.05), and
// the mean duration of a scrape.
func BenchmarkHeartbeatFanInMetrics(b *testing.B) {
	if testing.Short() {
		b.Skip("10 s windows of 1,000 heartbeats a second")
	}
	const nodes, publishers = 1000, 4
	window := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("RESTARTCOORD_BENCH_FANIN_WINDOW")); err == nil && v > 0 {
		window = v
	}
	f := newBenchFleet(b)
	pubCtx, pubStop := context.WithCancel(context.Background())
	var pubWG sync.WaitGroup
	b.Cleanup(func() { pubStop(); pubWG.Wait() })
	published := publishHeartbeats(pubCtx, &pubWG, f.conn.Conn, nodes, publishers)
	// One coordinator process at a time: start it, let it lead and see the
	// fleet, measure a window (scraping it when it has metrics), stop it.
	measure := func(withMetrics bool) (cpu time.Duration, hbs uint64, scrapes int, scrapeTime time.Duration) {
		arg, url := "off", ""
		if withMetrics {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			arg = ln.Addr().String()
			_ = ln.Close()
			url = "http://" + arg + "/metrics"
		}
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), benchMetricsCoord+"="+arg, benchURL+"="+f.url)
		cmd = f.startProcess(fmt.Sprintf("coordinator-metrics-%v", withMetrics), cmd)
		defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
		f.waitFor(60*time.Second, "the coordinator to lead and see the fleet", func() bool {
			var h schema.ClusterHealth
			return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.Leader != "" && h.NodesTotal >= nodes
		})
		time.Sleep(2 * time.Second) // past the start's own work
		c0, err := procCPU(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		p0, end := published.Load(), time.Now().Add(window)
		for time.Now().Before(end) {
			time.Sleep(time.Second)
			if url == "" {
				continue
			}
			t0 := time.Now()
			res, err := http.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK || !strings.Contains(string(body), `restartcoord_fleet_nodes{state="healthy"} 1000`) {
				b.Fatalf("scrape: %v %d, want 1,000 healthy nodes in:\n%.2000s", err, res.StatusCode, body)
			}
			scrapes, scrapeTime = scrapes+1, scrapeTime+time.Since(t0)
		}
		c1, err := procCPU(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		return c1 - c0, published.Load() - p0, scrapes, scrapeTime
	}
	var off, on time.Duration
	var offHB, onHB uint64
	var scrapes int
	var scrapeTime time.Duration
	for b.Loop() {
		c, n, _, _ := measure(false)
		off, offHB = off+c, offHB+n
		c, n, s, st := measure(true)
		on, onHB, scrapes, scrapeTime = on+c, onHB+n, scrapes+s, scrapeTime+st
	}
	perHB := func(d time.Duration, n uint64) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
	offUS, onUS := perHB(off, offHB), perHB(on, onHB)
	b.Logf("metrics off: %.0f ms CPU for %d heartbeats = %.1f µs/heartbeat; on: %.0f ms for %d = %.1f µs/heartbeat (%d scrapes, %.1f ms each); ratio %.3f (target <= 1.05)",
		benchMS(off), offHB, offUS, benchMS(on), onHB, onUS, scrapes, benchMS(scrapeTime)/float64(max(scrapes, 1)), onUS/offUS)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(offUS, "off_µs/hb")
	b.ReportMetric(onUS, "on_µs/hb")
	b.ReportMetric(onUS/offUS, "on/off")
	b.ReportMetric(benchMS(scrapeTime)/float64(max(scrapes, 1)), "scrape_ms")
}

package coordinator_test

// Coordinator benchmarks of issue 4: failure detection (SIGKILL of a whole
// node to "declared failed"), heartbeat fan-in (coordinator CPU per
// heartbeat against a bare subscriber decoding the same JSON, each in its
// own process), and the coordinator's overhead in a roll over 50 nodes.
//
//	go test ./coordinator -run '^$' -bench . -benchtime 3x -timeout 60m
//
// Each benchmark reports its figures as custom metrics and suppresses ns/op;
// nothing is asserted on timings (docs/benchmarks-clients-coordinator.md
// judges them). All are skipped under -short.
//
// The coordinator runs with coordinator.DefaultConfig (tick 250 ms) unless a
// sub-benchmark's name says otherwise: that is what `restartcoord
// coordinator` runs. harness_test.go takes *testing.T, which a benchmark
// cannot provide; what is needed is repeated here with testing.TB.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// benchRole makes the test binary run, instead of the tests, one of the
// processes of BenchmarkHeartbeatFanIn: "subscriber" (the bare subscriber)
// or "coordinator" (used when ./cmd/restartcoord cannot be built). It is
// read in init, before TestMain.
const (
	benchRole      = "RESTARTCOORD_BENCH_ROLE"
	benchURL       = "RESTARTCOORD_BENCH_URL"
	benchHeartbeat = "RESTARTCOORD_BENCH_HEARTBEAT"
	// benchCountSubject is where the bare subscriber answers how many
	// heartbeats it decoded.
	benchCountSubject = "bench.fanin.count"
)

func init() {
	switch os.Getenv(benchRole) {
	case "":
	case "subscriber":
		os.Exit(benchSubscriberMain())
	case "coordinator":
		os.Exit(benchCoordinatorMain())
	default:
		os.Exit(2)
	}
}

// benchSubscriberMain is the bare subscriber: it decodes every heartbeat
// into schema.Heartbeat, as the coordinator does, and does nothing else.
func benchSubscriberMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	nc, err := nats.Connect(os.Getenv(benchURL))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	var n, sum atomic.Uint64
	if _, err := nc.Subscribe(schema.HeartbeatWildcard, func(m *nats.Msg) {
		var hb schema.Heartbeat
		if json.Unmarshal(m.Data, &hb) != nil {
			return
		}
		n.Add(1)
		sum.Add(hb.Seq)
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := nc.Subscribe(benchCountSubject, func(m *nats.Msg) {
		_ = m.Respond(strconv.AppendUint(nil, n.Load(), 10))
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := nc.Flush(); err != nil {
		return 1
	}
	<-ctx.Done()
	return 0
}

// benchCoordinatorMain runs a coordinator as `restartcoord coordinator`
// does (DefaultConfig), for when the binary cannot be built.
func benchCoordinatorMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := coordinator.DefaultConfig()
	cfg.NATS.URL = os.Getenv(benchURL)
	if d, err := time.ParseDuration(os.Getenv(benchHeartbeat)); err == nil {
		cfg.HeartbeatInterval = d
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
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

// benchFleet is newFleet(t, false) for a benchmark: one embedded NATS
// server (fsync on every write), the store initialised.
type benchFleet struct {
	tb   testing.TB
	url  string
	conn *bus.Conn
	bs   *bus.Store
	dir  string
}

func newBenchFleet(tb testing.TB) *benchFleet {
	tb.Helper()
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(filepath.Join(dir, "nats")))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Stop)
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: srv.URL(), Name: "bench"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(conn.Close)
	bs, err := bus.NewStore(conn)
	if err != nil {
		tb.Fatal(err)
	}
	if err := bus.Init(ctx, bs.JetStream(), bus.DefaultStoreConfig()); err != nil {
		tb.Fatal(err)
	}
	return &benchFleet{tb: tb, url: srv.URL(), conn: conn, bs: bs, dir: dir}
}

// with is the same fleet reporting to tb (a sub-benchmark's).
func (f *benchFleet) with(tb testing.TB) *benchFleet {
	c := *f
	c.tb = tb
	return &c
}

// nodeConfig is a node with the defaults (heartbeat hb), logging nowhere.
func (f *benchFleet) nodeConfig(id string, priority int, hb time.Duration) node.Config {
	cfg := node.DefaultConfig(id)
	cfg.NATS.URL, cfg.LogDir, cfg.Priority = f.url, filepath.Join(f.dir, "logs"), priority
	cfg.HeartbeatInterval = hb
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

// coordConfig is DefaultConfig on this fleet with the nodes' heartbeat
// interval; errors go to the benchmark's log.
func (f *benchFleet) coordConfig(id string, hb time.Duration) coordinator.Config {
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.NATS.URL, cfg.HeartbeatInterval = id, f.url, hb
	cfg.Logger = slog.New(slog.NewTextHandler(benchLog{f.tb}, &slog.HandlerOptions{Level: slog.LevelError}))
	return cfg
}

type benchLog struct{ tb testing.TB }

func (w benchLog) Write(b []byte) (int, error) { w.tb.Log(string(b)); return len(b), nil }

// startNodes runs the given nodes in this process, ten at a time, and
// returns once every one is ready; they stop (all at once) at cleanup.
func (f *benchFleet) startNodes(ids []string, hb time.Duration) {
	f.tb.Helper()
	var mu sync.Mutex
	var stops []func()
	f.tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		var wg sync.WaitGroup
		for _, s := range stops {
			wg.Add(1)
			go func() { defer wg.Done(); s() }()
		}
		wg.Wait()
	})
	for from := 0; from < len(ids); from += 10 {
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for i := from; i < min(from+10, len(ids)); i++ {
			sup, err := node.NewSupervisor(f.nodeConfig(ids[i], i, hb))
			if err != nil {
				f.tb.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			ready, done := make(chan struct{}), make(chan error, 1)
			go func() { done <- sup.Run(ctx, ready) }()
			mu.Lock()
			stops = append(stops, func() { cancel(); <-done })
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-ready:
				case err := <-done:
					done <- err // for the stop at cleanup
					errs <- fmt.Errorf("node %s did not start: %v", ids[i], err)
				case <-time.After(90 * time.Second):
					errs <- fmt.Errorf("node %s not ready in 90s", ids[i])
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			f.tb.Fatal(err)
		}
	}
}

// startNodeProcess runs a whole node as its own process (the test binary,
// see TestMain), to be killed with SIGKILL; it returns once the node is
// healthy.
func (f *benchFleet) startNodeProcess(id string, priority int, hb time.Duration) *exec.Cmd {
	f.tb.Helper()
	cfg := f.nodeConfig(id, priority, hb)
	cfg.Logger = nil
	data, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envNode+"="+string(data))
	if err := cmd.Start(); err != nil {
		f.tb.Fatal(err)
	}
	f.tb.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	f.waitFor(60*time.Second, "node "+id+" healthy", func() bool {
		var h schema.Health
		return f.request(schema.NodeSubject(id, schema.OpHealth), nil, &h) == nil && h.Healthy
	})
	return cmd
}

// startCoordinator runs a coordinator in this process; stop (also at
// cleanup) ends it and releases its lease.
func (f *benchFleet) startCoordinator(cfg coordinator.Config) (*coordinator.Coordinator, func()) {
	f.tb.Helper()
	c, err := coordinator.New(cfg)
	if err != nil {
		f.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx, ready) }()
	select {
	case <-ready:
	case <-done:
		cancel()
		f.tb.Fatalf("coordinator %s did not start", cfg.ID)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	f.tb.Cleanup(stop)
	f.waitFor(30*time.Second, cfg.ID+" to lead", func() bool { ok, _ := c.IsLeader(); return ok })
	return c, stop
}

func (f *benchFleet) request(subj string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return f.conn.RequestJSON(ctx, subj, body, nil, out)
}

func (f *benchFleet) cluster(op string, body, out any) error {
	return f.request(schema.ClusterSubject(op), body, out)
}

func (f *benchFleet) nodes() map[string]schema.ClusterNode {
	f.tb.Helper()
	var l schema.NodeList
	if err := f.cluster(schema.OpClusterNodes, map[string]any{}, &l); err != nil {
		f.tb.Fatal(err)
	}
	out := make(map[string]schema.ClusterNode, len(l.Nodes))
	for _, n := range l.Nodes {
		out[n.NodeID] = n
	}
	return out
}

func (f *benchFleet) waitFor(d time.Duration, what string, cond func() bool) {
	f.tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			f.tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// readStream returns the data of every message of a stream subject filter.
func (f *benchFleet) readStream(stream, filter string) [][]byte {
	f.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out [][]byte
	if err := f.bs.ReadSubject(ctx, stream, filter, func(data []byte) error { out = append(out, data); return nil }); err != nil {
		f.tb.Fatal(err)
	}
	return out
}

type benchDurations []time.Duration

// quantile by nearest rank: of a few samples, p99 is the largest.
func (s benchDurations) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(float64(len(c))*q+0.999999) - 1
	return c[max(0, min(i, len(c)-1))]
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ---------------------------------------------------------------------------
// 4. Failure detection.

// BenchmarkFailureDetection: a whole node (supervisor and, by its
// parent-death signal, its worker) runs as its own process and is killed
// with SIGKILL at a random moment of its heartbeat period; cluster.nodes is
// polled every 10 ms until it says the node failed. A new node process (a
// new id) each iteration; the dead one is forgotten afterwards. At the
// default heartbeat (1 s) and at 250 ms, nodes and coordinator alike, each
// with its own fleet. Reported: median and p99 in ms, the target (3
// intervals + 200 ms), and the coordinator's tick.
func BenchmarkFailureDetection(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a node process per iteration")
	}
	for _, hb := range []time.Duration{time.Second, 250 * time.Millisecond} {
		b.Run("heartbeat="+hb.String(), func(b *testing.B) { benchDetection(b, hb) })
	}
}

func benchDetection(b *testing.B, hb time.Duration) {
	f := newBenchFleet(b)
	cfg := f.coordConfig("c1", hb)
	f.startCoordinator(cfg)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	var det benchDurations
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		id := fmt.Sprintf("k%03d", i)
		cmd := f.startNodeProcess(id, i, hb)
		f.waitFor(30*time.Second, id+" healthy in the coordinator's view", func() bool {
			n, ok := f.nodes()[id]
			return ok && n.Healthy
		})
		time.Sleep(time.Duration(rng.Int64N(int64(hb)))) // any moment of the heartbeat period
		b.StartTimer()
		killed := time.Now()
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for {
			if n, ok := f.nodes()[id]; ok && n.Failed {
				break
			}
			if time.Since(killed) > 60*time.Second {
				b.Fatalf("%s not declared failed 60s after SIGKILL", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
		det = append(det, time.Since(killed))
		b.StopTimer()
		_ = cmd.Wait()
		if err := f.request(schema.ClusterNodeSubject(id, "forget"), map[string]any{}, &schema.ClusterNode{}); err != nil {
			b.Fatalf("forget %s: %v", id, err)
		}
		b.StartTimer()
	}
	target := 3*hb + 200*time.Millisecond
	b.Logf("heartbeat %s, coordinator tick %s: SIGKILL to declared failed p50 %.0f ms, p99 %.0f ms over %d kills (target < %.0f ms); samples %v",
		hb, cfg.Tick, benchMS(det.quantile(0.5)), benchMS(det.quantile(0.99)), len(det), benchMS(target), det)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(det.quantile(0.5)), "p50_ms")
	b.ReportMetric(benchMS(det.quantile(0.99)), "p99_ms")
	b.ReportMetric(benchMS(target), "target_ms")
	b.ReportMetric(benchMS(cfg.Tick), "tick_ms")
}

// ---------------------------------------------------------------------------
// 5. Heartbeat fan-in.

// procCPU is a process's user+system CPU time so far, from /proc/<pid>/stat
// (utime and stime, in clock ticks of 1/100 s: USER_HZ on Linux).
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	// The command name (field 2) may hold spaces: count from after it.
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(fields[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// startProcess runs cmd until cleanup (SIGTERM, then SIGKILL after 20 s),
// with its output in a log file of the benchmark's directory.
func (f *benchFleet) startProcess(name string, cmd *exec.Cmd) *exec.Cmd {
	f.tb.Helper()
	log, err := os.Create(filepath.Join(f.dir, name+".log"))
	if err != nil {
		f.tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		f.tb.Fatal(err)
	}
	var once sync.Once
	f.tb.Cleanup(func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			_ = log.Close()
		})
	})
	return cmd
}

// coordinatorProcess starts `restartcoord coordinator --server URL` built
// from ./cmd/restartcoord, or, if that does not build (the command is
// being edited elsewhere), the same coordinator (DefaultConfig) run by
// this test binary. It returns the process and what runs in it.
func (f *benchFleet) coordinatorProcess(hb time.Duration) (*exec.Cmd, string) {
	f.tb.Helper()
	bin := filepath.Join(f.tb.TempDir(), "restartcoord")
	goTool, err := exec.LookPath("go")
	if err == nil {
		build := exec.Command(goTool, "build", "-o", bin, "./cmd/restartcoord")
		build.Dir = ".."
		var out []byte
		if out, err = build.CombinedOutput(); err != nil {
			f.tb.Logf("go build ./cmd/restartcoord failed (%v): %s; the coordinator runs in the test binary instead", err, out)
		}
	}
	if err == nil {
		cmd := exec.Command(bin, "coordinator", "--server", f.url, "--heartbeat", hb.String(), "--log-level", "warn")
		return f.startProcess("coordinator", cmd), "restartcoord coordinator (built from ./cmd/restartcoord)"
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchRole+"=coordinator", benchURL+"="+f.url, benchHeartbeat+"="+hb.String())
	return f.startProcess("coordinator", cmd), "coordinator.DefaultConfig in the test binary (./cmd/restartcoord did not build)"
}

// BenchmarkHeartbeatFanIn: 1,000 simulated nodes heartbeat once a second
// (schema.Heartbeat JSON on orch.v1.hb.<id>, published by 4 goroutines of
// this process) to a coordinator running in its own process and, at the
// same time, to a bare subscriber process that decodes the same JSON and
// does nothing else. Each iteration is a 10 s window; the CPU time
// (utime+stime) each process spent in it, divided by the heartbeats
// published in it, is the CPU per heartbeat. Reported: µs per heartbeat of
// both and their ratio (target <= 2), and the idle CPU of both (no
// heartbeats) measured before.
func BenchmarkHeartbeatFanIn(b *testing.B) {
	if testing.Short() {
		b.Skip("10 s windows of 1,000 heartbeats a second")
	}
	const nodes, publishers = 1000, 4
	window := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("RESTARTCOORD_BENCH_FANIN_WINDOW")); err == nil && v > 0 {
		window = v
	}
	f := newBenchFleet(b)
	// The publishers stop after the coordinator (cleanups run last first):
	// a coordinator that saw 1,000 nodes fall silent would go on to declare
	// every one failed.
	pubCtx, pubStop := context.WithCancel(context.Background())
	var pubWG sync.WaitGroup
	b.Cleanup(func() { pubStop(); pubWG.Wait() })
	coord, how := f.coordinatorProcess(time.Second)
	subCmd := exec.Command(os.Args[0])
	subCmd.Env = append(os.Environ(), benchRole+"=subscriber", benchURL+"="+f.url)
	bare := f.startProcess("subscriber", subCmd)
	f.waitFor(60*time.Second, "the coordinator to lead", func() bool {
		var h schema.ClusterHealth
		return f.cluster(schema.OpClusterHealth, map[string]any{}, &h) == nil && h.Leader != ""
	})
	bareCount := func() uint64 {
		m, err := f.conn.Conn.Request(benchCountSubject, nil, 5*time.Second)
		if err != nil {
			b.Fatalf("bare subscriber: %v", err)
		}
		n, _ := strconv.ParseUint(string(m.Data), 10, 64)
		return n
	}
	f.waitFor(30*time.Second, "the bare subscriber", func() bool {
		_, err := f.conn.Conn.Request(benchCountSubject, nil, time.Second)
		return err == nil
	})
	cpu := func(c *exec.Cmd) time.Duration {
		d, err := procCPU(c.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	// Idle: what each process spends with no heartbeat at all.
	idle := 5 * time.Second
	c0, s0 := cpu(coord), cpu(bare)
	time.Sleep(idle)
	coordIdle, bareIdle := cpu(coord)-c0, cpu(bare)-s0

	published := publishHeartbeats(pubCtx, &pubWG, f.conn.Conn, nodes, publishers)
	time.Sleep(3 * time.Second) // every simulated node known to the coordinator
	if n := len(f.nodes()); n < nodes {
		b.Fatalf("the coordinator sees %d nodes, want %d", n, nodes)
	}
	var coordCPU, bareCPU time.Duration
	var hbs uint64
	var wall time.Duration
	b0 := bareCount()
	p0 := published.Load()
	for b.Loop() {
		c0, s0, p0, t0 := cpu(coord), cpu(bare), published.Load(), time.Now()
		time.Sleep(window)
		c1, s1, p1 := cpu(coord), cpu(bare), published.Load()
		coordCPU, bareCPU, hbs, wall = coordCPU+c1-c0, bareCPU+s1-s0, hbs+p1-p0, wall+time.Since(t0)
	}
	if err := f.conn.Conn.Flush(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	decoded, sent := bareCount()-b0, published.Load()-p0
	view := len(f.nodes())
	perHB := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(hbs) }
	coordUS, bareUS := perHB(coordCPU), perHB(bareCPU)
	b.Logf("%s: %d heartbeats in %.0f s (%.0f/s): coordinator %.0f ms CPU = %.1f µs/heartbeat, bare subscriber %.0f ms = %.1f µs/heartbeat, ratio %.2f (target <= 2); idle over %s: coordinator %.0f ms, bare %.0f ms; bare decoded %d of %d published; coordinator view %d nodes",
		how, hbs, wall.Seconds(), float64(hbs)/wall.Seconds(), benchMS(coordCPU), coordUS, benchMS(bareCPU), bareUS, coordUS/bareUS,
		idle, benchMS(coordIdle), benchMS(bareIdle), decoded, sent, view)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(coordUS, "coord_µs/hb")
	b.ReportMetric(bareUS, "bare_µs/hb")
	b.ReportMetric(coordUS/bareUS, "ratio")
	b.ReportMetric(float64(hbs)/wall.Seconds(), "hb/s")
	b.ReportMetric(benchMS(coordIdle)/idle.Seconds(), "coord_idle_ms/s")
	b.ReportMetric(benchMS(bareIdle)/idle.Seconds(), "bare_idle_ms/s")
}

// ---------------------------------------------------------------------------
// 6. Roll overhead.

// rollEvent is a roll progress event as ORCH_EVENTS keeps it.
type rollEvent struct {
	Kind      string    `json:"kind"`
	NodeID    string    `json:"node_id"`
	Timestamp time.Time `json:"timestamp"`
}

// union is the total length of the union of intervals.
func union(iv [][2]time.Time) time.Duration {
	c := slices.Clone(iv)
	slices.SortFunc(c, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var total time.Duration
	var cur [2]time.Time
	for i, x := range c {
		switch {
		case i == 0:
			cur = x
		case !x[0].After(cur[1]):
			if x[1].After(cur[1]) {
				cur[1] = x[1]
			}
		default:
			total += cur[1].Sub(cur[0])
			cur = x
		}
	}
	if len(c) > 0 {
		total += cur[1].Sub(cur[0])
	}
	return total
}

// rollFigures is what one roll measured.
type rollFigures struct {
	wall      time.Duration  // roll "started" event to "completed" event
	restarts  time.Duration  // union of the nodes' restart intervals
	waits     time.Duration  // min_healthy_time waits outside those intervals
	sum       time.Duration  // sum of the nodes' restart durations
	permit    benchDurations // per node: node_started to node_done, less its restart and min_healthy_time
	overhead  time.Duration  // (wall - restarts - waits) / nodes
	slot      time.Duration  // (budget x wall - sum - nodes x min_healthy_time) / nodes
	naive     time.Duration  // (wall - sum/budget - nodes x min_healthy_time/budget) / nodes
	maxOut    int            // most restarts that overlapped
	meanStart time.Duration  // mean restart duration
	// held is the mean number of permits held (node_started to node_done)
	// over the roll, out of the budget.
	held float64
}

// BenchmarkRollOverhead: a roll over 50 nodes running in this process
// (supervisors here, workers as processes) on one embedded server,
// max_unavailable 5, min_healthy_time 0.1 s; the same fleet is rolled once
// per iteration, with the coordinator's default tick (250 ms) and with the
// test harness's (50 ms). The figures come from ORCH_EVENTS (the roll's
// events and the nodes' restart results), not from the coordinator's
// memory. The coordinator's overhead per node is
//
//	(wall - |union of [started_at, completed_at] of the restarts|
//	      - |min_healthy_time waits not inside that union|) / nodes
//
// i.e. the time of the roll during which no node was restarting or waiting
// out its min_healthy_time, per node (target < 20 ms). Also reported: the
// per-slot figure (budget x wall - sum of restarts - nodes x
// min_healthy_time) / nodes, the time a permit was held or left idle beyond
// the node's own restart and wait; the mean permit overhead measured per
// node from the node_started and node_done events; and the mean number of
// permits held over the roll (out of the budget of 5).
// RESTARTCOORD_BENCH_ROLL_NODES changes the fleet's size, and
// RESTARTCOORD_BENCH_ROLL_HEARTBEAT the heartbeat of nodes and coordinator
// (default 1 s).
func BenchmarkRollOverhead(b *testing.B) {
	if testing.Short() {
		b.Skip("50 nodes")
	}
	n := 50
	if v, err := strconv.Atoi(os.Getenv("RESTARTCOORD_BENCH_ROLL_NODES")); err == nil && v > 0 {
		n = v
	}
	hb := time.Second // the nodes' default
	if v, err := time.ParseDuration(os.Getenv("RESTARTCOORD_BENCH_ROLL_HEARTBEAT")); err == nil && v > 0 {
		hb = v
	}
	const budget, minHealthy = 5, 100 * time.Millisecond
	f := newBenchFleet(b)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%02d", i+1)
	}
	t0 := time.Now()
	f.startNodes(ids, hb)
	b.Logf("%d nodes (heartbeat %s) ready in %s", n, hb, time.Since(t0).Round(time.Millisecond))
	for _, tick := range []time.Duration{250 * time.Millisecond, 50 * time.Millisecond} {
		b.Run(fmt.Sprintf("nodes=%d/tick=%s", n, tick), func(b *testing.B) {
			f := f.with(b) // failures and logs go to the sub-benchmark
			cfg := f.coordConfig("c-tick-"+tick.String(), hb)
			cfg.Tick = tick
			_, stop := f.startCoordinator(cfg)
			defer stop()
			var figs []rollFigures
			for b.Loop() {
				b.StopTimer()
				f.waitFor(60*time.Second, "every node healthy and idle in the coordinator's view", func() bool {
					ns := f.nodes()
					for _, id := range ids {
						if x, ok := ns[id]; !ok || !x.Healthy || (x.Phase != schema.PhaseIdle && x.Phase != schema.PhaseComplete && x.Phase != "") {
							return false
						}
					}
					return true
				})
				b.StartTimer()
				figs = append(figs, f.roll(b, len(ids), budget, minHealthy))
			}
			var over, slot, naive, wall, perm benchDurations
			held := 0.0
			for _, x := range figs {
				over, slot, naive, wall = append(over, x.overhead), append(slot, x.slot), append(naive, x.naive), append(wall, x.wall)
				perm, held = append(perm, x.permit...), held+x.held/float64(len(figs))
			}
			for i, x := range figs {
				b.Logf("roll %d: wall %.2f s, union of restarts %.2f s, min_healthy waits outside it %.2f s, sum of restarts %.2f s (mean %.0f ms, at most %d at once): overhead %.1f ms/node (target < 20); per slot %.1f ms/node; naive %.1f ms/node; permit overhead p50 %.0f ms mean %.0f ms; permits held %.2f of %d on average",
					i+1, x.wall.Seconds(), x.restarts.Seconds(), x.waits.Seconds(), x.sum.Seconds(), benchMS(x.meanStart), x.maxOut,
					benchMS(x.overhead), benchMS(x.slot), benchMS(x.naive), benchMS(x.permit.quantile(0.5)), benchMS(mean(x.permit)),
					x.held, budget)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(benchMS(over.quantile(0.5)), "overhead_ms/node")
			b.ReportMetric(benchMS(slot.quantile(0.5)), "slot_overhead_ms/node")
			b.ReportMetric(benchMS(naive.quantile(0.5)), "naive_ms/node")
			b.ReportMetric(benchMS(mean(perm)), "permit_overhead_mean_ms")
			b.ReportMetric(held, "permits_held_mean")
			b.ReportMetric(wall.quantile(0.5).Seconds(), "roll_s")
		})
	}
}

func mean(s benchDurations) time.Duration {
	if len(s) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range s {
		t += d
	}
	return t / time.Duration(len(s))
}

// roll runs one roll of the group to its end and works out its figures.
func (f *benchFleet) roll(b *testing.B, nodes, budget int, minHealthy time.Duration) rollFigures {
	b.Helper()
	ends := make(chan *nats.Msg, 64)
	sub, err := f.conn.Conn.ChanSubscribe(schema.RollEventSubject("*", "*"), ends)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := f.conn.Conn.Flush(); err != nil {
		b.Fatal(err)
	}
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStart, map[string]any{"selector": map[string]any{"group": "default"},
		"max_unavailable": budget, "min_healthy_time": minHealthy.Seconds()}, &st); err != nil {
		b.Fatal(err)
	}
	timeout := time.After(10 * time.Minute)
	for done := false; !done; {
		select {
		case m := <-ends:
			tok := strings.Split(m.Subject, ".")
			if len(tok) < 2 || tok[len(tok)-2] != st.RollID {
				continue
			}
			switch tok[len(tok)-1] {
			case "completed":
				done = true
			case "failed", "paused":
				b.Fatalf("roll %s %s: %s", st.RollID, tok[len(tok)-1], m.Data)
			}
		case <-timeout:
			var now schema.RollStatus
			_ = f.cluster(schema.OpRollStatus, map[string]any{"roll_id": st.RollID}, &now)
			b.Fatalf("roll %s not completed in 10 min: %+v", st.RollID, now)
		}
	}
	b.StopTimer()
	defer b.StartTimer()
	var started, completed time.Time
	nodeStart, nodeDone := map[string]time.Time{}, map[string]time.Time{}
	for _, data := range f.readStream(schema.StreamEvents, schema.RollEventSubject(st.RollID, "*")) {
		var ev rollEvent
		if json.Unmarshal(data, &ev) != nil {
			continue
		}
		switch ev.Kind {
		case "started":
			started = ev.Timestamp
		case "completed":
			completed = ev.Timestamp
		case "node_started":
			nodeStart[ev.NodeID] = ev.Timestamp
		case "node_done":
			nodeDone[ev.NodeID] = ev.Timestamp
		}
	}
	var res []schema.RestartResult
	for _, data := range f.readStream(schema.StreamEvents, schema.NodeEventSubject("*", schema.EventRestartResult)) {
		var r schema.RestartResult
		if json.Unmarshal(data, &r) == nil && strings.HasPrefix(r.RestartID, st.RollID+"-") {
			res = append(res, r)
		}
	}
	if len(res) != nodes || started.IsZero() || completed.IsZero() {
		b.Fatalf("roll %s: %d restart results for %d nodes; started %v completed %v", st.RollID, len(res), nodes, started, completed)
	}
	var fig rollFigures
	var restarts, withWait [][2]time.Time
	for _, r := range res {
		if !r.Success {
			b.Fatalf("roll %s: %s restart failed: %+v", st.RollID, r.NodeID, r)
		}
		d := r.CompletedAt.Sub(r.StartedAt)
		fig.sum += d
		restarts = append(restarts, [2]time.Time{r.StartedAt, r.CompletedAt})
		withWait = append(withWait, [2]time.Time{r.StartedAt, r.CompletedAt.Add(minHealthy)})
		if s, ok := nodeStart[r.NodeID]; ok {
			if e, ok := nodeDone[r.NodeID]; ok {
				fig.permit = append(fig.permit, e.Sub(s)-d-minHealthy)
			}
		}
		n := 0
		for _, o := range res {
			if !o.StartedAt.After(r.StartedAt) && o.CompletedAt.After(r.StartedAt) {
				n++
			}
		}
		fig.maxOut = max(fig.maxOut, n)
	}
	nd := time.Duration(nodes)
	fig.wall = completed.Sub(started)
	fig.restarts = union(restarts)
	fig.waits = union(withWait) - fig.restarts
	fig.overhead = (fig.wall - fig.restarts - fig.waits) / nd
	fig.slot = (time.Duration(budget)*fig.wall - fig.sum - nd*minHealthy) / nd
	fig.naive = (fig.wall - fig.sum/time.Duration(budget) - nd*minHealthy/time.Duration(budget)) / nd
	fig.meanStart = fig.sum / nd
	var held time.Duration
	for id, s := range nodeStart {
		if e, ok := nodeDone[id]; ok {
			held += e.Sub(s)
		}
	}
	fig.held = float64(held) / float64(fig.wall)
	return fig
}

// publishHeartbeats simulates nodes: publishers goroutines (added to wg,
// ending with ctx) publish the heartbeats of nodes nodes "sim-NNNN", each
// node once a second, a publisher's nodes spread evenly over the second.
// It returns the count of heartbeats published.
func publishHeartbeats(ctx context.Context, wg *sync.WaitGroup, nc *nats.Conn, nodes, publishers int) *atomic.Uint64 {
	var published atomic.Uint64
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := nodes / publishers
			hbs := make([]schema.Heartbeat, own)
			for i := range hbs {
				n := p*own + i
				hbs[i] = schema.Heartbeat{Type: schema.TypeHeartbeat, NodeID: fmt.Sprintf("sim-%04d", n), Group: "default",
					Priority: n, Phase: schema.PhaseIdle, Healthy: true, PID: 100000 + n, WorkerPID: 200000 + n,
					Version: "dev", ConfigVersion: "2026-01"}
			}
			t := time.NewTicker(time.Second / time.Duration(own))
			defer t.Stop()
			for i := 0; ; i = (i + 1) % own {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				hb := &hbs[i]
				hb.Seq++
				hb.Load = float64(hb.Seq % 7)
				hb.Timestamp = time.Now().UTC()
				data, _ := json.Marshal(hb)
				if nc.Publish(schema.HeartbeatSubject(hb.NodeID), data) == nil {
					published.Add(1)
				}
			}
		}()
	}
	return &published
}

package node_test

// Restart benchmarks: a node holding 10,000 tasks of ~1 KB, restarted
// gracefully (drain, snapshot, new worker restores it) and in an emergency
// (SIGKILL; the new worker restores from the snapshot and the journal), and
// the floor those restarts are compared with: starting a process that
// connects to NATS, plus writing the state's bytes, synced, to a JetStream
// object store and reading them back.
//
//	go test ./node -run '^$' -bench 'Restart' -benchtime 10x -timeout 30m
//
// Each benchmark reports its own figures as custom metrics (milliseconds),
// the median and p99 of the restart's own duration (request to healthy, as
// the restart result reports it), and the floor measured in the same process,
// interleaved with the restarts so that both see the same machine.
//
// The helpers of helpers_test.go take *testing.T, which a benchmark cannot
// provide, so the few used here are repeated with testing.TB.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

const benchTasks = 10000

// benchEnv is newEnv for a benchmark: one embedded NATS server (fsync on
// every write, as in production), the store initialised.
type benchEnv struct {
	tb   testing.TB
	url  string
	conn *bus.Conn
	bs   *bus.Store
	dir  string
}

func newBenchEnv(tb testing.TB) *benchEnv {
	tb.Helper()
	dir := tb.TempDir()
	srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(filepath.Join(dir, "js")))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: srv.URL(), Name: "bench"})
	if err != nil {
		tb.Fatal(err)
	}
	bs, err := bus.NewStore(conn)
	if err != nil {
		tb.Fatal(err)
	}
	if err := bus.Init(ctx, bs.JetStream(), bus.DefaultStoreConfig()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return &benchEnv{tb: tb, url: srv.URL(), conn: conn, bs: bs, dir: dir}
}

// config is fastConfig's node configuration, logging warnings to the
// benchmark's log.
func (e *benchEnv) config(id string) node.Config {
	cfg := node.DefaultConfig(id)
	cfg.NATS.URL = e.url
	cfg.LogDir = filepath.Join(e.dir, "logs")
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.WatchdogInterval = 50 * time.Millisecond
	cfg.WatchdogTimeout = 400 * time.Millisecond
	cfg.CrashBackoffStart = 50 * time.Millisecond
	cfg.CrashBackoffMax = 500 * time.Millisecond
	cfg.SuspendTimeout = time.Second
	cfg.StartTimeout = 30 * time.Second
	cfg.LeaseTTL = 3 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(tbWriter{e.tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) { w.tb.Log(string(b)); return len(b), nil }

// startNode runs a supervisor until the benchmark ends.
func (e *benchEnv) startNode(cfg node.Config) {
	e.tb.Helper()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		e.tb.Fatalf("node %s did not start: %v", cfg.NodeID, err)
	case <-time.After(30 * time.Second):
		cancel()
		e.tb.Fatalf("node %s not ready in 30s", cfg.NodeID)
	}
	e.tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			e.tb.Errorf("node %s did not stop within 60s", cfg.NodeID)
		}
	})
}

func (e *benchEnv) req(nodeID, op string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return e.conn.RequestJSON(ctx, schema.NodeSubject(nodeID, op), body, nil, out)
}

func (e *benchEnv) health(nodeID string) schema.Health {
	e.tb.Helper()
	var h schema.Health
	if err := e.req(nodeID, schema.OpHealth, nil, &h); err != nil {
		e.tb.Fatalf("health: %v", err)
	}
	return h
}

func (e *benchEnv) restart(nodeID string, body map[string]any) schema.RestartResult {
	e.tb.Helper()
	var r schema.RestartResult
	for tries := 0; ; tries++ {
		err := e.req(nodeID, schema.OpRestart, body, &r)
		if err == nil {
			break
		}
		// A crash recovery may still be finishing after health says healthy.
		if !isCode(err, schema.CodeRestartInProgress) || tries > 500 {
			e.tb.Fatalf("restart %v: %v", body, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !r.Success || r.Phase != schema.PhaseComplete {
		e.tb.Fatalf("restart %v failed: %+v", body, r)
	}
	return r
}

func (e *benchEnv) client(clientID, nodeID string) *client.Client {
	e.tb.Helper()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		e.tb.Fatal(err)
	}
	c, err := client.New(nc, clientID, nodeID, client.WithReplyPoll(500*time.Millisecond))
	if err != nil {
		e.tb.Fatal(err)
	}
	e.tb.Cleanup(func() {
		_ = c.Close()
		nc.Close()
	})
	return c
}

// fill creates n tasks of ~1 KB (the shape of
// TestGracefulRestartRestoresTenThousandTasks: every task has the same
// description, which s2 compresses some 20:1) through two clients. With
// RESTARTCOORD_BENCH_INCOMPRESSIBLE set, each description is 840 random
// base64 characters instead, which s2 hardly compresses.
func (e *benchEnv) fill(nodeID string, from, n int) {
	e.tb.Helper()
	same := strings.Repeat("forty-two bytes of description per line. ", 20)
	desc := func(int) string { return same }
	if os.Getenv("RESTARTCOORD_BENCH_INCOMPRESSIBLE") != "" {
		desc = func(int) string {
			b := make([]byte, 630)
			_, _ = rand.Read(b)
			return base64.StdEncoding.EncodeToString(b)
		}
	}
	clients := []*client.Client{e.client(fmt.Sprintf("c1-%d", from), nodeID), e.client(fmt.Sprintf("c2-%d", from), nodeID)}
	next := make(chan int, n)
	for i := range n {
		next <- from + i
	}
	close(next)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func(c *client.Client) {
			defer wg.Done()
			for i := range next {
				for tries := 0; ; tries++ {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					_, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("task %d", i), Description: desc(i)})
					cancel()
					if err == nil {
						break
					}
					// The buffer counts requests until the worker's (asynchronous)
					// acknowledgement reaches the server: under load it can fill
					// although only 4 requests per client are in flight. Refused
					// requests were not applied: send again.
					if !errors.Is(err, client.ErrBufferFull) || tries > 100 {
						errc <- err
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(clients[w%len(clients)])
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		e.tb.Fatalf("create: %v", err)
	}
}

// phaseClock records when each phase of the node's restarts began (the
// supervisor's phase events), to say where a restart's time went.
type phaseClock struct {
	mu     sync.Mutex
	events []schema.PhaseEvent
	sub    *nats.Subscription
}

func (e *benchEnv) watchPhases(nodeID string) *phaseClock {
	e.tb.Helper()
	pc := &phaseClock{}
	sub, err := e.conn.Subscribe(schema.NodeEventSubject(nodeID, schema.EventPhase), func(m *nats.Msg) {
		var ev schema.PhaseEvent
		if jsonUnmarshal(m.Data, &ev) == nil {
			pc.mu.Lock()
			pc.events = append(pc.events, ev)
			pc.mu.Unlock()
		}
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	pc.sub = sub
	e.tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return pc
}

// spans returns how long each phase of restart id lasted (until the next
// phase began). The last events may trail the reply: it waits for them.
func (pc *phaseClock) spans(id string) map[schema.Phase]time.Duration {
	var evs []schema.PhaseEvent
	for range 100 {
		evs = evs[:0]
		pc.mu.Lock()
		for _, ev := range pc.events {
			if ev.RestartID == id {
				evs = append(evs, ev)
			}
		}
		pc.mu.Unlock()
		if len(evs) > 0 && (evs[len(evs)-1].Phase == schema.PhaseComplete || evs[len(evs)-1].Phase == schema.PhaseFailed) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	out := map[schema.Phase]time.Duration{}
	for i := 0; i+1 < len(evs); i++ {
		out[evs[i].Phase] += evs[i+1].Timestamp.Sub(evs[i].Timestamp)
	}
	return out
}

// samples collects durations and reports order statistics.
type samples []time.Duration

func (s samples) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if q == 0.5 && len(c)%2 == 0 {
		return (c[len(c)/2-1] + c[len(c)/2]) / 2
	}
	// Nearest rank: p99 of fewer than 100 samples is the largest.
	i := int(math.Ceil(q*float64(len(c)))) - 1
	return c[max(0, min(i, len(c)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s samples) report(b *testing.B, name string) {
	b.ReportMetric(ms(s.quantile(0.5)), name+"-median-ms")
	b.ReportMetric(ms(s.quantile(0.99)), name+"-p99-ms")
}

// floor measures the restart floor: a process start to a NATS connection,
// plus size bytes written to a JetStream object store (file storage, synced
// like every write of this server) and read back.
type floor struct {
	e   *benchEnv
	bin string
	obs jetstream.ObjectStore
}

// buildFloor builds testdata/floor (go test runs in the package's folder).
func buildFloor(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "floor")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/floor").CombinedOutput(); err != nil {
		tb.Fatalf("go build ./testdata/floor: %v\n%s", err, out)
	}
	return bin
}

func (e *benchEnv) floor() *floor {
	e.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The same settings as the snapshot object store.
	obs, err := e.bs.JetStream().CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "BENCH_FLOOR",
		Storage: jetstream.FileStorage, Replicas: 1})
	if err != nil {
		e.tb.Fatal(err)
	}
	return &floor{e: e, bin: buildFloor(e.tb), obs: obs}
}

// process starts the floor program and returns the time until it reported
// a NATS connection.
func (f *floor) process() time.Duration {
	f.e.tb.Helper()
	cmd := exec.Command(f.bin)
	cmd.Env = append(os.Environ(), "FLOOR_NATS_URL="+f.e.url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.e.tb.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		f.e.tb.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	took := time.Since(start)
	if err != nil || line != "connected\n" {
		_ = cmd.Wait()
		f.e.tb.Fatalf("floor process: %q %v %s", line, err, stderr.String())
	}
	if err := cmd.Wait(); err != nil {
		f.e.tb.Fatalf("floor process: %v %s", err, stderr.String())
	}
	return took
}

// store writes size random bytes to the object store (chunked like a
// snapshot), reads them back, and returns how long that took.
func (f *floor) store(size int) time.Duration {
	f.e.tb.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chunk := uint32(min(max(f.e.conn.MaxPayload()/2, 128<<10), 4<<20))
	start := time.Now()
	if _, err := f.obs.Put(ctx, jetstream.ObjectMeta{Name: "floor", Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunk}},
		bytes.NewReader(data)); err != nil {
		f.e.tb.Fatal(err)
	}
	res, err := f.obs.Get(ctx, "floor")
	if err != nil {
		f.e.tb.Fatal(err)
	}
	back, err := io.ReadAll(res)
	_ = res.Close()
	took := time.Since(start)
	if err != nil || !bytes.Equal(back, data) {
		f.e.tb.Fatalf("floor read back %d bytes, %v", len(back), err)
	}
	return took
}

// sample is one floor measurement: process + store.
func (f *floor) sample(size int) (proc, store time.Duration) {
	return f.process(), f.store(size)
}

// restartBench is the shared set-up: a node with benchTasks tasks, one
// graceful restart done (so a snapshot exists), a floor at hand.
type restartBench struct {
	e      *benchEnv
	id     string
	phases *phaseClock
	floor  *floor
	size   int // the snapshot's uncompressed size
}

func newRestartBench(b *testing.B) *restartBench {
	b.Helper()
	e := newBenchEnv(b)
	id := "bench-1"
	cfg := e.config(id)
	// A crash after a healthy period this long starts the backoff afresh,
	// so every SIGKILL of the emergency benchmark is a first crash.
	cfg.HealthyReset = 200 * time.Millisecond
	e.startNode(cfg)
	e.fill(id, 0, benchTasks)
	rb := &restartBench{e: e, id: id, phases: e.watchPhases(id), floor: e.floor()}
	for try := 1; ; try++ {
		r := e.restart(id, map[string]any{"reason": "manual_request"})
		if r.State.TasksRestored != benchTasks {
			b.Fatalf("restored %d tasks, want %d", r.State.TasksRestored, benchTasks)
		}
		if r.State.Preserved && r.State.SizeBytes > 0 {
			rb.size = int(r.State.SizeBytes)
			return rb
		}
		// A restart whose graceful part did not happen (the worker was not
		// serving at that moment on a loaded machine, say) wrote no snapshot.
		b.Logf("set-up restart %d wrote no snapshot: graceful %v, errors %v", try, r.Graceful, r.Errors)
		if try == 3 {
			b.Fatal("no snapshot after 3 graceful restarts")
		}
	}
}

// BenchmarkGracefulRestart10k: b.N graceful restarts (drain, snapshot,
// new worker, restore) of a node with 10,000 tasks of ~1 KB.
func BenchmarkGracefulRestart10k(b *testing.B) {
	rb := newRestartBench(b)
	b.Run(fmt.Sprintf("tasks=%d", benchTasks), func(b *testing.B) {
		var dur, ser, load, other, floorProc, floorStore, floorAll samples
		size := int64(rb.size)
		for b.Loop() {
			r := rb.e.restart(rb.id, map[string]any{"reason": "manual_request"})
			if r.State.TasksSaved != benchTasks || r.State.TasksRestored != benchTasks || !r.State.Preserved {
				b.Fatalf("state: %+v", r.State)
			}
			// Kept replies stay stored by reference across restarts: the
			// snapshot does not grow.
			if r.State.SizeBytes > size+size/20 {
				b.Fatalf("snapshot grew from %d to %d bytes (errors %v)", size, r.State.SizeBytes, r.Errors)
			}
			d := time.Duration(r.Duration * float64(time.Second))
			dur = append(dur, d)
			size = r.State.SizeBytes
			sp := rb.phases.spans(r.RestartID)
			ser = append(ser, sp[schema.PhaseSerializingState])
			load = append(load, sp[schema.PhaseLoadingState])
			other = append(other, d-sp[schema.PhaseSerializingState]-sp[schema.PhaseLoadingState])
			if os.Getenv("BENCH_PHASES") != "" {
				b.Logf("phases: %v", sp)
			}
			b.StopTimer()
			p, s := rb.floor.sample(int(size))
			floorProc, floorStore, floorAll = append(floorProc, p), append(floorStore, s), append(floorAll, p+s)
			b.StartTimer()
		}
		dur.report(b, "restart")
		ser.report(b, "serializing")
		load.report(b, "loading")
		b.ReportMetric(ms(other.quantile(0.5)), "other-phases-median-ms")
		floorAll.report(b, "floor")
		b.ReportMetric(ms(floorProc.quantile(0.5)), "floor-process-median-ms")
		b.ReportMetric(ms(floorStore.quantile(0.5)), "floor-store-median-ms")
		b.ReportMetric(float64(dur.quantile(0.5))/float64(floorAll.quantile(0.5)), "median/floor")
		b.ReportMetric(float64(size), "snapshot-bytes")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if list, err := rb.e.bs.ListSnapshots(ctx, rb.id); err == nil && len(list) > 0 {
			b.ReportMetric(float64(list[0].StoredBytes), "stored-bytes")
		}
	})
}

// BenchmarkEmergencyRestart10k: the same node, b.N times killed with
// SIGKILL (measured from the kill to health reporting a new worker healthy)
// and b.N times restarted with graceful:false (the restart result's
// duration). A snapshot from the set-up's graceful restart plus 100 journal
// entries after it are what every new worker restores.
func BenchmarkEmergencyRestart10k(b *testing.B) {
	rb := newRestartBench(b)
	rb.e.fill(rb.id, benchTasks, 100)
	b.Run(fmt.Sprintf("tasks=%d", benchTasks), func(b *testing.B) {
		var kill, api, load, floorAll samples
		for b.Loop() {
			b.StopTimer()
			// Healthy for longer than HealthyReset: a first crash.
			time.Sleep(250 * time.Millisecond)
			h := rb.e.health(rb.id)
			if !h.Healthy || h.WorkerPID == 0 {
				b.Fatalf("not healthy before the kill: %+v", h)
			}
			b.StartTimer()
			start := time.Now()
			if err := syscall.Kill(h.WorkerPID, syscall.SIGKILL); err != nil {
				b.Fatal(err)
			}
			for {
				var n schema.Health
				if err := rb.e.req(rb.id, schema.OpHealth, nil, &n); err == nil && n.Healthy && n.WorkerPID != 0 && n.WorkerPID != h.WorkerPID {
					break
				}
				if time.Since(start) > 60*time.Second {
					b.Fatal("no healthy new worker 60s after SIGKILL")
				}
				time.Sleep(2 * time.Millisecond)
			}
			kill = append(kill, time.Since(start))

			r := rb.e.restart(rb.id, map[string]any{"graceful": false, "preserve_state": false, "reason": "emergency_shutdown"})
			if r.Graceful || r.State.TasksRestored != benchTasks+100 {
				b.Fatalf("emergency restart: %+v", r)
			}
			api = append(api, time.Duration(r.Duration*float64(time.Second)))
			load = append(load, rb.phases.spans(r.RestartID)[schema.PhaseLoadingState])
			b.StopTimer()
			p, s := rb.floor.sample(rb.size)
			floorAll = append(floorAll, p+s)
			b.StartTimer()
		}
		kill.report(b, "sigkill")
		api.report(b, "restart")
		load.report(b, "loading")
		floorAll.report(b, "floor")
		b.ReportMetric(float64(kill.quantile(0.5))/float64(floorAll.quantile(0.5)), "sigkill/floor")
	})
}

// BenchmarkRestartFloor: what no restart of that node can beat on this
// machine: a process (the floor program, linking the same bus package as a
// worker) started until it is connected to NATS, plus the state's size in
// bytes written to a JetStream object store, synced, and read back.
func BenchmarkRestartFloor(b *testing.B) {
	e := newBenchEnv(b)
	f := e.floor()
	// The uncompressed size of the 10k-task state of the other benchmarks.
	const size = 11_906_203
	b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
		var proc, store, all samples
		for b.Loop() {
			p, s := f.sample(size)
			proc, store, all = append(proc, p), append(store, s), append(all, p+s)
		}
		all.report(b, "floor")
		proc.report(b, "process")
		store.report(b, "store")
	})
}

// BenchmarkWholeNodeCrashToHealthy: a whole node (supervisor and worker, a
// process of its own as `restartcoord node` is) killed with SIGKILL and
// started again at once, as a service manager does, timed from the kill to
// the new node's health answering healthy with a new worker. The node runs
// with the production timings (LeaseTTL 10 s, heartbeats every 1 s); with
// the fast takeover on, the new supervisor proves the killed one dead and
// takes its node-id lease by compare-and-set; off, it probes for heartbeats
// and waits for the lease to expire, as every node did before.
//
//	go test ./node -run '^$' -bench WholeNodeCrash -benchtime 10x
func BenchmarkWholeNodeCrashToHealthy(b *testing.B) {
	for _, fast := range []bool{true, false} {
		b.Run(fmt.Sprintf("fast_takeover=%v", fast), func(b *testing.B) {
			e := newBenchEnv(b)
			def := node.DefaultConfig("crash-1")
			pc := nodeProcessConfig{NodeID: "crash-1", URL: e.url, LogDir: filepath.Join(e.dir, "logs"),
				LeaseTTL: def.LeaseTTL, Heartbeat: def.HeartbeatInterval, FastTakeover: fast}
			p := startNodeProcess(b, pc)
			worker := healthyWorker(b, e.conn, pc.NodeID, 0, 60*time.Second)
			var took samples
			takeovers := 0
			for b.Loop() {
				// A node that has served a moment: its lease refreshed
				// once or not at all, as after most crashes.
				time.Sleep(500 * time.Millisecond)
				killed := time.Now()
				p.kill9(b)
				p = startNodeProcess(b, pc)
				worker = healthyWorker(b, e.conn, pc.NodeID, worker, 60*time.Second)
				took = append(took, time.Since(killed))
				if takeoverLine.MatchString(p.log()) {
					takeovers++
				}
			}
			if want := map[bool]int{true: len(took), false: 0}[fast]; takeovers != want {
				b.Fatalf("%d of %d restarts took the lease over, want %d", takeovers, len(took), want)
			}
			b.ReportMetric(took.quantile(0.5).Seconds(), "crash-to-healthy-median-s")
			b.ReportMetric(took.quantile(0.99).Seconds(), "crash-to-healthy-p99-s")
			b.ReportMetric(0, "ns/op") // the loop's wall time includes the pauses: not a figure
		})
	}
}

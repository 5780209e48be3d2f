package node_test

// Client benchmarks of issue 3: throughput of client.Do against the floor of
// the same durable work done by a bare program in the same run, the extra
// latency of a request sent in the middle of a graceful restart, and the
// time to answer full buffers (100 clients x 100 requests) after the node
// starts again.
//
//	go test ./node -run '^$' -bench 'ClientDo|DuringRestart|FullBuffer' -benchtime 3x -timeout 30m
//
// Each benchmark reports its figures as custom metrics and suppresses ns/op
// (an iteration's wall time means nothing by itself here). Nothing is
// asserted on timings: the figures are read, and judged in
// docs/benchmarks-clients-coordinator.md.
//
// helpers_test.go takes *testing.T, which a benchmark cannot provide; the few
// helpers needed are repeated here with testing.TB, under names of their own
// (node/bench_test.go, owned elsewhere, has its own).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// cbEnv is newEnv for a benchmark: one embedded NATS server (fsync on every
// write, as in production), the store initialised.
type cbEnv struct {
	tb   testing.TB
	url  string
	conn *bus.Conn
	bs   *bus.Store
	dir  string
}

func newCBEnv(tb testing.TB) *cbEnv {
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
		srv.Stop()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	bs, err := bus.NewStore(conn)
	if err != nil {
		tb.Fatal(err)
	}
	if err := bus.Init(ctx, bs.JetStream(), bus.DefaultStoreConfig()); err != nil {
		tb.Fatal(err)
	}
	return &cbEnv{tb: tb, url: srv.URL(), conn: conn, bs: bs, dir: dir}
}

// config is fastConfig's node configuration (helpers_test.go), logging
// warnings to the benchmark's log.
func (e *cbEnv) config(id string) node.Config {
	cfg := node.DefaultConfig(id)
	cfg.NATS.URL = e.url
	cfg.LogDir = filepath.Join(e.dir, "logs")
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.WatchdogInterval = 50 * time.Millisecond
	cfg.WatchdogTimeout = time.Second
	cfg.CrashBackoffStart = 50 * time.Millisecond
	cfg.CrashBackoffMax = 500 * time.Millisecond
	cfg.SuspendTimeout = time.Second
	cfg.StartTimeout = 30 * time.Second
	cfg.LeaseTTL = 5 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(cbLog{e.tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type cbLog struct{ tb testing.TB }

func (w cbLog) Write(b []byte) (int, error) { w.tb.Log(string(b)); return len(b), nil }

// startNode runs a supervisor and returns once its worker is ready. stop
// cancels it (drain, snapshot, deregister) and waits for it; it is also
// called at cleanup, and a second call does nothing.
func (e *cbEnv) startNode(cfg node.Config) (stop func()) {
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
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		e.tb.Fatalf("node %s not ready in 60s", cfg.NodeID)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.tb.Logf("node %s stop: %v", cfg.NodeID, err)
				}
			case <-time.After(60 * time.Second):
				e.tb.Errorf("node %s did not stop within 60s", cfg.NodeID)
			}
		})
	}
	e.tb.Cleanup(stop)
	return stop
}

func (e *cbEnv) req(nodeID, op string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return e.conn.RequestJSON(ctx, schema.NodeSubject(nodeID, op), body, nil, out)
}

// client is a Client with the package's defaults (as a program would use
// it), on a connection of its own.
func (e *cbEnv) client(clientID, nodeID string) *client.Client {
	e.tb.Helper()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		e.tb.Fatal(err)
	}
	c, err := client.New(nc, clientID, nodeID)
	if err != nil {
		nc.Close()
		e.tb.Fatal(err)
	}
	e.tb.Cleanup(func() {
		_ = c.Close()
		nc.Close()
	})
	return c
}

// cbDurations is a set of samples.
type cbDurations []time.Duration

// quantile by nearest rank (q=0.5: the median; q=0.99 of a few samples: the
// largest).
func (s cbDurations) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(float64(len(c))*q+0.999999) - 1
	return c[max(0, min(i, len(c)-1))]
}

func cbMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cbUpdateArgs is the task.update every benchmark call sends: a checkpoint
// of the caller's own task.
func cbUpdateArgs(taskID string, n int) schema.TaskUpdateArgs {
	return schema.TaskUpdateArgs{TaskID: taskID, Checkpoint: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// ---------------------------------------------------------------------------
// 1. Throughput of client.Do against the floor.

// cbFloor is the bare program of the floor: per request, the durable work
// the node does, and nothing else. A "client" publishes the request to the
// request stream and waits for its PubAck (synced: the embedded server
// fsyncs every write); the "worker" (one connection, as the node's worker)
// writes the journal entry of the effect to ORCH_JOURNAL (a scratch node's
// subject, PubAck awaited) and publishes the reply on the client's inbox;
// the client waits for it. What the floor leaves out is what the system
// adds: the consumer delivering the request, its acknowledgement, the
// state, sessions and batching.
type cbFloor struct {
	js      jetstream.JetStream // the worker's
	nc      *nats.Conn
	clients []*cbFloorClient
	task    schema.Task
}

type cbFloorClient struct {
	id    string
	nc    *nats.Conn
	js    jetstream.JetStream
	inbox string
	sub   *nats.Subscription
	sent  int // requests sent so far; the subject changes every 100 (the per-subject buffer)
}

const cbFloorNode = "floor-scratch"

func newCBFloor(e *cbEnv, n int) *cbFloor {
	e.tb.Helper()
	connect := func() (*nats.Conn, jetstream.JetStream) {
		nc, err := nats.Connect(e.url)
		if err != nil {
			e.tb.Fatal(err)
		}
		e.tb.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			e.tb.Fatal(err)
		}
		return nc, js
	}
	f := &cbFloor{}
	f.nc, f.js = connect()
	now := time.Now().UTC()
	f.task = schema.Task{TaskID: uuid.NewString(), Title: "floor task", Status: schema.TaskActive, CreatedAt: now, UpdatedAt: now}
	for i := range n {
		c := &cbFloorClient{id: fmt.Sprintf("floor-%02d", i)}
		c.nc, c.js = connect()
		c.inbox = nats.NewInbox()
		var err error
		if c.sub, err = c.nc.SubscribeSync(c.inbox); err != nil {
			e.tb.Fatal(err)
		}
		if err := c.nc.Flush(); err != nil {
			e.tb.Fatal(err)
		}
		f.clients = append(f.clients, c)
	}
	return f
}

// op is one request of the floor, end to end.
func (f *cbFloor) op(ctx context.Context, c *cbFloorClient, n int) error {
	reqID := uuid.NewString()
	args, _ := json.Marshal(cbUpdateArgs(f.task.TaskID, n))
	body, _ := json.Marshal(schema.TaskRequest{Op: schema.OpTaskUpdate, Args: args})
	// The request subject of a scratch node; a fresh client token every 100
	// requests keeps each subject under the stream's per-subject limit
	// (nothing consumes them).
	subj := schema.RequestSubject(cbFloorNode, fmt.Sprintf("%s-%d", c.id, c.sent/100))
	c.sent++
	m := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{}}
	m.Header.Set(schema.HeaderReplyTo, c.inbox)
	m.Header.Set(nats.MsgIdHdr, reqID)
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("floor request: %w", err)
	}
	// The worker's side: the journal entry of the effect (task, session,
	// reply), then the reply.
	now := time.Now().UTC()
	t := f.task
	t.Checkpoint, t.UpdatedAt = json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)), now
	reply := schema.TaskReplyBody(reqID, &t, nil)
	entry := schema.JournalEntry{V: 1, At: now, RequestID: reqID, ClientID: c.id, Op: schema.OpTaskUpdate, Task: &t,
		Session: &schema.Session{SessionID: c.id, ClientID: c.id, ConnectedAt: now, LastActivity: now, Requests: int64(n)},
		Reply:   reply}
	data, _ := json.Marshal(&entry)
	if _, err := f.js.Publish(ctx, schema.JournalSubject(cbFloorNode), data, jetstream.WithMsgID(cbFloorNode+":"+reqID)); err != nil {
		return fmt.Errorf("floor journal: %w", err)
	}
	if err := f.nc.Publish(c.inbox, reply); err != nil {
		return fmt.Errorf("floor reply: %w", err)
	}
	if _, err := c.sub.NextMsgWithContext(ctx); err != nil {
		return fmt.Errorf("floor reply not received: %w", err)
	}
	return nil
}

// cbRound runs per calls from each of n goroutines and returns the wall time
// and every call's latency; the first error ends the round.
func cbRound(n, per int, call func(g, j int) error) (time.Duration, cbDurations, error) {
	var wg sync.WaitGroup
	lat := make([]cbDurations, n)
	errs := make([]error, n)
	start := time.Now()
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				t0 := time.Now()
				if err := call(g, j); err != nil {
					errs[g] = err
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var all cbDurations
	for _, l := range lat {
		all = append(all, l...)
	}
	return wall, all, errors.Join(errs...)
}

// BenchmarkClientDoThroughput: 20 clients, each calling client.Do
// (task.update of its own task) one call after the other, against one node;
// and, in the same iterations (alternating which goes first), the floor: 20
// goroutines doing the same durable work per request in a bare program.
// Reported: ops/s of both, and their ratio (target >= 0.5).
func BenchmarkClientDoThroughput(b *testing.B) {
	const clients = 20
	per := 100
	if testing.Short() {
		per = 20
	}
	e := newCBEnv(b)
	e.startNode(e.config("n1"))
	cs := make([]*client.Client, clients)
	tasks := make([]string, clients)
	for i := range cs {
		cs[i] = e.client(fmt.Sprintf("tp-%02d", i), "n1")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t, err := cs[i].CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("counter of tp-%02d", i)})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		tasks[i] = t.TaskID
	}
	fl := newCBFloor(e, clients)
	seq := 0 // checkpoint values keep changing across rounds
	doRound := func(per int) (time.Duration, cbDurations, error) {
		base := seq
		seq += per
		return cbRound(clients, per, func(g, j int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, err := cs[g].Do(ctx, schema.OpTaskUpdate, cbUpdateArgs(tasks[g], base+j))
			return err
		})
	}
	floorRound := func(per int) (time.Duration, cbDurations, error) {
		base := seq
		seq += per
		return cbRound(clients, per, func(g, j int) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return fl.op(ctx, fl.clients[g], base+j)
		})
	}
	// Warm-up, not counted: connections, stream and consumer state, caches.
	for _, round := range []func(int) (time.Duration, cbDurations, error){doRound, floorRound} {
		if _, _, err := round(10); err != nil {
			b.Fatal(err)
		}
	}
	var doWall, floorWall time.Duration
	var doLat, floorLat cbDurations
	rounds := 0
	for b.Loop() {
		order := []bool{true, false} // true: client.Do
		if rounds%2 == 1 {
			order = []bool{false, true}
		}
		for _, isDo := range order {
			if isDo {
				w, l, err := doRound(per)
				if err != nil {
					b.Fatalf("client.Do: %v", err)
				}
				doWall, doLat = doWall+w, append(doLat, l...)
			} else {
				w, l, err := floorRound(per)
				if err != nil {
					b.Fatalf("floor: %v", err)
				}
				floorWall, floorLat = floorWall+w, append(floorLat, l...)
			}
		}
		rounds++
	}
	ops := float64(rounds * clients * per)
	doRate, floorRate := ops/doWall.Seconds(), ops/floorWall.Seconds()
	var kept, retries uint64
	for _, c := range cs {
		st := c.Stats()
		kept, retries = kept+st.KeptReplies, retries+st.Retries
	}
	b.Logf("%d clients x %d calls x %d rounds: client.Do %.0f ops/s (p50 %.1f ms, p99 %.1f ms); floor %.0f ops/s (p50 %.1f ms, p99 %.1f ms); ratio %.2f (target >= 0.5); kept replies used %d, publish retries %d",
		clients, per, rounds, doRate, cbMS(doLat.quantile(0.5)), cbMS(doLat.quantile(0.99)),
		floorRate, cbMS(floorLat.quantile(0.5)), cbMS(floorLat.quantile(0.99)), doRate/floorRate, kept, retries)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(doRate, "do_ops/s")
	b.ReportMetric(floorRate, "floor_ops/s")
	b.ReportMetric(doRate/floorRate, "ratio")
	b.ReportMetric(cbMS(doLat.quantile(0.5)), "do_p50_ms")
	b.ReportMetric(cbMS(floorLat.quantile(0.5)), "floor_p50_ms")
}

// ---------------------------------------------------------------------------
// 2. A request sent in the middle of a graceful restart.

// BenchmarkRequestDuringRestart: a graceful restart whose drain takes about
// a second (a job step outlasts the 1 s suspension timeout, as in
// TestRequestDuringRestartWaitsAndIsAnsweredAfter); once restart.status
// reports maintenance mode, a request (task.create) is sent through
// client.Do. Its latency is compared with what remained of the restart when
// it was sent (the restart's completed_at minus the send time): the extra
// latency is latency - remaining. Reported: its median and max in ms
// (target <= 50 ms), and the median latency and remaining time.
func BenchmarkRequestDuringRestart(b *testing.B) {
	e := newCBEnv(b)
	e.startNode(e.config("n1"))
	c := e.client("dr-1", "n1")
	var extra, latency, remaining cbDurations
	replayed := 0
	i := 0
	for b.Loop() {
		i++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if _, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("slow %d", i),
			Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 2, StepSeconds: 5}}); err != nil {
			cancel()
			b.Fatal(err)
		}
		type outcome struct {
			r   schema.RestartResult
			err error
		}
		res := make(chan outcome, 1)
		go func() {
			var r schema.RestartResult
			err := e.req("n1", schema.OpRestart, map[string]any{"reason": "manual_request"}, &r)
			res <- outcome{r, err}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var st schema.RestartStatus
			if e.req("n1", schema.OpRestartStatus, nil, &st) == nil && st.CurrentStatus.MaintenanceMode {
				break
			}
			if time.Now().After(deadline) {
				cancel()
				b.Fatal("no maintenance mode within 10s of the restart request")
			}
			time.Sleep(5 * time.Millisecond)
		}
		sent := time.Now()
		_, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("sent during restart %d", i)})
		answered := time.Now()
		cancel()
		if err != nil {
			b.Fatalf("request during the restart: %v", err)
		}
		o := <-res
		if o.err != nil || !o.r.Success {
			b.Fatalf("restart: %v %+v", o.err, o.r)
		}
		replayed += o.r.BufferedRequestsReplayed
		lat, rem := answered.Sub(sent), o.r.CompletedAt.Sub(sent)
		latency, remaining, extra = append(latency, lat), append(remaining, rem), append(extra, lat-rem)
	}
	b.Logf("%d restarts: request latency p50 %.0f ms, restart remaining at send p50 %.0f ms, extra p50 %.1f ms max %.1f ms (target <= 50 ms); samples extra %v; buffered requests replayed %d",
		len(extra), cbMS(latency.quantile(0.5)), cbMS(remaining.quantile(0.5)), cbMS(extra.quantile(0.5)), cbMS(extra.quantile(1)),
		extra, replayed)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(cbMS(extra.quantile(0.5)), "extra_p50_ms")
	b.ReportMetric(cbMS(extra.quantile(1)), "extra_max_ms")
	b.ReportMetric(cbMS(latency.quantile(0.5)), "latency_p50_ms")
	b.ReportMetric(cbMS(remaining.quantile(0.5)), "remaining_p50_ms")
}

// ---------------------------------------------------------------------------
// 3. Full buffers answered after the node starts again.

// BenchmarkFullBufferAnswered: 100 clients; the node is stopped (its
// supervisor cancelled: drain, snapshot, deregister); each client sends 100
// task.update calls with client.Go, which return once the request is in the
// buffer, so each client's buffer holds 100 (its limit); then the node is
// started again, and the time from that start to the last answer is
// measured. Reported: seconds, requests per second, and the part of it the
// node took to become ready.
func BenchmarkFullBufferAnswered(b *testing.B) {
	if testing.Short() {
		b.Skip("100 clients x 100 buffered requests per iteration")
	}
	const clients, per = 100, 100
	e := newCBEnv(b)
	cfg := e.config("n1")
	stop := e.startNode(cfg)
	ctx0, cancel0 := context.WithTimeout(context.Background(), time.Minute)
	limit, err := e.bs.RequestBufferLimit(ctx0)
	cancel0()
	if err != nil {
		b.Fatal(err)
	}
	if limit != per {
		b.Fatalf("the request buffer holds %d per client, this benchmark fills %d", limit, per)
	}
	cs := make([]*client.Client, clients)
	tasks := make([]string, clients)
	for i := range cs {
		cs[i] = e.client(fmt.Sprintf("fb-%03d", i), "n1")
	}
	if _, _, err := cbRound(clients, 1, func(g, _ int) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t, err := cs[g].CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("counter of fb-%03d", g)})
		if err == nil {
			tasks[g] = t.TaskID
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	depth := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d, err := e.bs.BufferDepths(ctx, "n1")
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, v := range d {
			n += v
		}
		return n
	}
	var total, ready, fill cbDurations
	var kept0 uint64
	for _, c := range cs {
		kept0 += c.Stats().KeptReplies
	}
	round := 0
	for b.Loop() {
		round++
		// Every earlier request acknowledged: the buffers are empty.
		for deadline := time.Now().Add(30 * time.Second); depth() != 0; {
			if time.Now().After(deadline) {
				b.Fatalf("%d requests still buffered before stopping the node", depth())
			}
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		calls := make([][]*client.Call, clients)
		t0 := time.Now()
		if _, _, err := cbRound(clients, 1, func(g, _ int) error {
			for j := range per {
				call := cs[g].Go(ctx, schema.OpTaskUpdate, cbUpdateArgs(tasks[g], round*per+j))
				select {
				case <-call.Done():
					_, err := call.Wait()
					return fmt.Errorf("client %d call %d not buffered: %w", g, j, err)
				default:
				}
				calls[g] = append(calls[g], call)
			}
			return nil
		}); err != nil {
			cancel()
			b.Fatal(err)
		}
		fill = append(fill, time.Since(t0))
		if n := depth(); n != clients*per {
			cancel()
			b.Fatalf("%d requests buffered, want %d", n, clients*per)
		}
		start := time.Now()
		stop = e.startNode(cfg)
		up := time.Since(start)
		for g := range calls {
			for j, call := range calls[g] {
				if _, err := call.Wait(); err != nil {
					cancel()
					b.Fatalf("client %d call %d: %v", g, j, err)
				}
			}
		}
		all := time.Since(start)
		cancel()
		total, ready = append(total, all), append(ready, up)
	}
	var kept uint64
	for _, c := range cs {
		kept += c.Stats().KeptReplies
	}
	n := float64(clients * per)
	med := total.quantile(0.5)
	b.Logf("%d x %d buffered requests: start to last answer p50 %.2f s (max %.2f s), %.0f requests/s; of which node start to ready p50 %.2f s; filling the buffers took p50 %.2f s; calls answered from the kept reply: %d; samples %v",
		clients, per, med.Seconds(), total.quantile(1).Seconds(), n/med.Seconds(), ready.quantile(0.5).Seconds(),
		fill.quantile(0.5).Seconds(), kept-kept0, total)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(med.Seconds(), "answer_all_s")
	b.ReportMetric(total.quantile(1).Seconds(), "answer_all_max_s")
	b.ReportMetric(n/med.Seconds(), "requests/s")
	b.ReportMetric(ready.quantile(0.5).Seconds(), "ready_s")
}

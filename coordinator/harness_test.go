package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/internal/hangtest"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// hangAfter: the longest a test here may take, cleanups included (the
// slowest takes about 40 s), before the binary ends naming it.
const hangAfter = 5 * time.Minute

type fleet struct {
	t    *testing.T
	cl   *bus.Cluster // nil with one embedded server
	url  string
	conn *bus.Conn
	bs   *bus.Store
	dir  string
}

// newFleet starts NATS: a 3-server cluster with R3 store when cluster is
// true, else one embedded server.
func newFleet(t *testing.T, cluster bool) *fleet {
	t.Helper()
	hangtest.Guard(t, hangAfter)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := bus.DefaultStoreConfig()
	var url string
	var cl *bus.Cluster
	if cluster {
		c, err := bus.StartCluster(ctx, 3, filepath.Join(dir, "nats"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		url, sc.Replicas, cl = c.URLs(), 3, c
	} else {
		srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(filepath.Join(dir, "nats")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		url = srv.URL()
	}
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: url, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	bs, _ := bus.NewStore(conn)
	if err := bus.Init(ctx, bs.JetStream(), sc); err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, cl: cl, url: url, conn: conn, bs: bs, dir: dir}
}

func (f *fleet) nodeConfig(id string, priority int) node.Config {
	cfg := node.DefaultConfig(id)
	cfg.NATS.URL, cfg.LogDir, cfg.Priority = f.url, filepath.Join(f.dir, "logs"), priority
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.WatchdogInterval, cfg.WatchdogTimeout = 100*time.Millisecond, time.Second
	cfg.CrashBackoffStart, cfg.CrashBackoffMax = 100*time.Millisecond, time.Second
	cfg.SuspendTimeout, cfg.LeaseTTL = time.Second, 3*time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

// startNodes runs n nodes in this process (n01..).
func (f *fleet) startNodes(n int) []string { return f.startNodesFrom(1, n) }

// startNodesFrom runs n nodes, numbered from first.
func (f *fleet) startNodesFrom(first, n int) []string {
	f.t.Helper()
	var ids []string
	var nodes []*runningNode
	for i := first - 1; i < first-1+n; i++ {
		id := fmt.Sprintf("n%02d", i+1)
		ids = append(ids, id)
		nodes = append(nodes, f.runNode(f.nodeConfig(id, i)))
	}
	for _, r := range nodes {
		r.awaitReady(f.t)
	}
	return ids
}

// runningNode is a node run in this process until the test ends.
type runningNode struct {
	id    string
	ready chan struct{} // closed when its worker is ready
	done  chan struct{} // closed when Run has returned
	err   error         // what Run returned, once done
}

// awaitReady fails the test if the node's Run returns before its worker is
// ready, or if that takes over a minute.
func (n *runningNode) awaitReady(t *testing.T) {
	t.Helper()
	select {
	case <-n.ready:
	case <-n.done:
		t.Fatalf("node %s stopped before it was ready: %v", n.id, n.err)
	case <-time.After(time.Minute):
		t.Fatalf("node %s not ready after a minute", n.id)
	}
}

// runNode runs a node in this process until the test ends.
func (f *fleet) runNode(cfg node.Config) *runningNode {
	f.t.Helper()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &runningNode{id: cfg.NodeID, ready: make(chan struct{}), done: make(chan struct{})}
	go func() { defer close(n.done); n.err = sup.Run(ctx, n.ready) }()
	f.t.Cleanup(func() { cancel(); <-n.done })
	return n
}

// startNodeNoWait runs a node whose worker may never become ready; it
// returns once the node's endpoints answer.
func (f *fleet) startNodeNoWait(id string, priority int) {
	f.t.Helper()
	f.runNode(f.nodeConfig(id, priority))
	f.waitFor(30*time.Second, "node "+id+" answering", func() bool {
		var h schema.Health
		return f.conn.RequestJSON(context.Background(), schema.NodeSubject(id, schema.OpHealth), nil, nil, &h) == nil
	})
}

// startNodeProcess runs a whole node as its own process (killable), and
// waits for it to be healthy.
func (f *fleet) startNodeProcess(id string, priority int) *exec.Cmd {
	f.t.Helper()
	return f.startNodeProcessUntil(id, priority, true)
}

// startNodeProcessUntil runs a whole node as its own process (killable),
// and waits for it to answer, and with healthy to be healthy.
func (f *fleet) startNodeProcessUntil(id string, priority int, healthy bool) *exec.Cmd {
	f.t.Helper()
	cfg := f.nodeConfig(id, priority)
	cfg.Logger = nil
	data, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envNode+"="+string(data))
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	f.waitFor(30*time.Second, "node "+id+" answering (healthy, if asked)", func() bool {
		var h schema.Health
		return f.conn.RequestJSON(context.Background(), schema.NodeSubject(id, schema.OpHealth), nil, nil, &h) == nil && (h.Healthy || !healthy)
	})
	return cmd
}

func (f *fleet) coordConfig(id string) coordinator.Config {
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.NATS.URL = id, f.url
	cfg.LeaseTTL, cfg.LeaseMargin = 3*time.Second, 750*time.Millisecond
	cfg.HeartbeatInterval, cfg.Tick, cfg.UnhealthyGrace = 200*time.Millisecond, 50*time.Millisecond, 500*time.Millisecond
	cfg.Ladder.BackoffStart, cfg.Ladder.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.BreakerCloseAfter = time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(testLog{f.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

type runningCoord struct {
	*coordinator.Coordinator
	stop func()
}

func (f *fleet) startCoordinator(id string) *runningCoord {
	f.t.Helper()
	return f.startCoordinatorWith(f.coordConfig(id))
}

func (f *fleet) startCoordinatorWith(cfg coordinator.Config) *runningCoord {
	f.t.Helper()
	id := cfg.ID
	c, err := coordinator.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	var runErr error
	go func() { defer close(done); runErr = c.Run(ctx, ready) }()
	select {
	case <-ready:
	case <-done:
		cancel()
		f.t.Fatalf("coordinator %s did not start: %v", id, runErr)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	f.t.Cleanup(stop)
	return &runningCoord{Coordinator: c, stop: stop}
}

func (f *fleet) waitFor(d time.Duration, what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitRoll waits for a roll to complete, or fails saying where it stands.
func (f *fleet) waitRoll(id string, d time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := f.rollStatus(id)
		if st.State == schema.RollCompleted {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("roll %s not completed after %s: %s done %d/%d current %v failed %v message %q\nnodes %+v\nnode view %+v",
				id, d, st.State, st.Done, st.Total, st.Current, st.Failed, st.Message, st.Nodes, f.nodes())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fleet) cluster(op string, body any, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return f.conn.RequestJSON(ctx, schema.ClusterSubject(op), body, nil, out)
}

func (f *fleet) nodes() map[string]schema.ClusterNode {
	f.t.Helper()
	var l schema.NodeList
	if err := f.cluster(schema.OpClusterNodes, map[string]any{}, &l); err != nil {
		f.t.Fatal(err)
	}
	out := map[string]schema.ClusterNode{}
	for _, n := range l.Nodes {
		out[n.NodeID] = n
	}
	return out
}

func (f *fleet) rollStatus(id string) schema.RollStatus {
	f.t.Helper()
	var st schema.RollStatus
	if err := f.cluster(schema.OpRollStatus, map[string]any{"roll_id": id}, &st); err != nil {
		f.t.Fatal(err)
	}
	return st
}

// restartResults reads every node's restart results from ORCH_EVENTS (the
// ground truth of what happened, not the coordinator's memory).
func (f *fleet) restartResults() []schema.RestartResult {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []schema.RestartResult
	err := bus.ReadAll(ctx, f.bs.JetStream(), schema.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.NodeEventSubject("*", schema.EventRestartResult)}}, func(m jetstream.Msg) error {
		var r schema.RestartResult
		if json.Unmarshal(m.Data(), &r) == nil {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// alerts reads the alerts of a kind from ORCH_ALERTS.
func (f *fleet) alerts(sev schema.Severity, kind string) []map[string]any {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []map[string]any
	_ = f.bs.ReadSubject(ctx, schema.StreamAlerts, schema.AlertSubject(sev, kind), func(data []byte) error {
		var a map[string]any
		if json.Unmarshal(data, &a) == nil {
			out = append(out, a)
		}
		return nil
	})
	return out
}

// maxConcurrent is the most restarts of the given nodes that overlapped in
// time, from their results.
func maxConcurrent(rs []schema.RestartResult) int {
	best := 0
	for _, a := range rs {
		n := 0
		for _, b := range rs {
			if !b.StartedAt.After(a.StartedAt) && b.CompletedAt.After(a.StartedAt) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

var _ = nats.MsgIdHdr

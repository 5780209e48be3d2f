package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// env is one embedded NATS server with the store initialised. Its store
// directory and port stay the same across restartServer.
type env struct {
	t    *testing.T
	mu   sync.Mutex
	srv  *bus.Embedded
	cfg  bus.EmbeddedConfig
	url  string
	conn *bus.Conn
	bs   *bus.Store
	dir  string
}

type envOptions struct {
	store     bus.StoreConfig
	fixedPort bool // listen on a port chosen once, so a restarted server has the same URL
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envOptions{store: bus.DefaultStoreConfig()}) }

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	dir := t.TempDir()
	cfg := bus.DefaultEmbeddedConfig(filepath.Join(dir, "js"))
	if o.fixedPort {
		cfg.Port = freePort(t)
	}
	srv, err := bus.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, cfg: cfg, url: srv.URL(), dir: dir}
	t.Cleanup(func() {
		if e.conn != nil {
			e.conn.Close()
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.srv != nil {
			e.srv.Stop()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.conn, err = bus.Connect(ctx, bus.ConnOptions{URL: e.url, Name: "test", ReconnectWait: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if e.bs, err = bus.NewStore(e.conn); err != nil {
		t.Fatal(err)
	}
	if err := bus.Init(ctx, e.bs.JetStream(), o.store); err != nil {
		t.Fatal(err)
	}
	return e
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// stopServer shuts the NATS server down (its store stays on disk).
func (e *env) stopServer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.srv.Stop()
	e.srv = nil
}

// startServer starts the server again on the same port and store.
func (e *env) startServer() {
	e.t.Helper()
	srv, err := bus.StartEmbedded(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

// fastConfig is a node config with short timings, so the suite is quick.
func (e *env) fastConfig(id string) node.Config {
	cfg := node.DefaultConfig(id)
	cfg.NATS.URL = e.url
	cfg.NATS.ReconnectWait = 50 * time.Millisecond
	cfg.LogDir = filepath.Join(e.dir, "logs")
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.WatchdogInterval = 50 * time.Millisecond
	cfg.WatchdogTimeout = 400 * time.Millisecond
	cfg.CrashBackoffStart = 50 * time.Millisecond
	cfg.CrashBackoffMax = 500 * time.Millisecond
	cfg.SuspendTimeout = time.Second
	cfg.StartTimeout = 30 * time.Second
	cfg.LeaseTTL = 3 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// testNode is a running node supervisor.
type testNode struct {
	t      *testing.T
	id     string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startNode runs a supervisor until stop or the end of the test.
func (e *env) startNode(cfg node.Config) *testNode {
	e.t.Helper()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	n := &testNode{t: e.t, id: cfg.NodeID, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- sup.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-n.done:
		cancel()
		e.t.Fatalf("node %s did not start: %v", cfg.NodeID, err)
	case <-time.After(30 * time.Second):
		cancel()
		e.t.Fatalf("node %s not ready in 30s", cfg.NodeID)
	}
	e.t.Cleanup(n.stop)
	return n
}

// stop does what SIGTERM does to `restartcoord node`: the worker drains, the
// node leaves the registry and releases its id. Requests wait in the buffer.
func (n *testNode) stop() {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("node %s stop: %v", n.id, err)
			}
		case <-time.After(60 * time.Second):
			n.t.Errorf("node %s did not stop within 60s", n.id)
		}
	})
}

// dial is a connection that rides server restarts, closed with the test.
func (e *env) dial() *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(3))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// client opens a Client on a connection of its own (a process of its own,
// as far as NATS can tell), closed when the test ends.
func (e *env) client(clientID, nodeID string, opts ...client.Option) *client.Client {
	e.t.Helper()
	c, err := client.New(e.dial(), clientID, nodeID, append([]client.Option{client.WithReplyPoll(500 * time.Millisecond)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (e *env) restart(nodeID string, body map[string]any) schema.RestartResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var r schema.RestartResult
	if err := e.conn.RequestJSON(ctx, schema.NodeSubject(nodeID, schema.OpRestart), body, nil, &r); err != nil {
		e.t.Fatalf("restart %v: %v", body, err)
	}
	return r
}

// bufferDepth is how many requests of clientID wait in nodeID's buffer.
func (e *env) bufferDepth(nodeID, clientID string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := e.bs.BufferDepths(ctx, nodeID)
	if err != nil {
		e.t.Fatal(err)
	}
	return d[clientID]
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// byTitle reads every task back (through c) and groups them by title.
func byTitle(t *testing.T, c *client.Client) map[string][]schema.Task {
	t.Helper()
	all, err := c.AllTasks(testCtx(t, 30*time.Second))
	if err != nil {
		t.Fatalf("reading tasks back: %v", err)
	}
	out := map[string][]schema.Task{}
	for _, x := range all {
		out[x.Title] = append(out[x.Title], x)
	}
	return out
}

// appliedOnce checks that the task acknowledged as want exists exactly once
// among got, with the acknowledged content.
func appliedOnce(t *testing.T, got map[string][]schema.Task, want *schema.Task) {
	t.Helper()
	xs := got[want.Title]
	if len(xs) != 1 {
		t.Fatalf("task %q applied %d times, want once", want.Title, len(xs))
	}
	if !xs[0].Equal(want) {
		a, _ := json.Marshal(xs[0])
		b, _ := json.Marshal(want)
		t.Fatalf("task %q differs from what the client was told:\n got  %s\n told %s", want.Title, a, b)
	}
}

func mustCode(t *testing.T, err error, code schema.Code) *schema.Error {
	t.Helper()
	var se *schema.Error
	if !errors.As(err, &se) {
		t.Fatalf("got error %v, want one wrapping a %s *schema.Error", err, code)
	}
	if se.Code != code {
		t.Fatalf("got code %s (%s), want %s", se.Code, se.Message, code)
	}
	return se
}

package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/internal/hangtest"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// env is one embedded NATS server with the store initialised.
type env struct {
	t    *testing.T
	srv  *bus.Embedded
	url  string
	conn *bus.Conn
	bs   *bus.Store
	dir  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	hangtest.Guard(t, 5*time.Minute) // the slowest test takes about 40 s
	dir := t.TempDir()
	srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(filepath.Join(dir, "js")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: srv.URL(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := bus.NewStore(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Init(ctx, bs.JetStream(), bus.DefaultStoreConfig()); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, url: srv.URL(), conn: conn, bs: bs, dir: dir}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return e
}

// fastConfig is a node config with short timings, so the suite is quick.
func (e *env) fastConfig(id string) node.Config {
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
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// startNode runs a supervisor until the test ends.
func (e *env) startNode(cfg node.Config) {
	e.t.Helper()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		e.t.Fatalf("node %s did not start: %v", cfg.NodeID, err)
	case <-time.After(30 * time.Second):
		cancel()
		e.t.Fatalf("node %s not ready in 30s", cfg.NodeID)
	}
	var once sync.Once
	e.t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Logf("node %s stop: %v", cfg.NodeID, err)
				}
			case <-time.After(60 * time.Second):
				e.t.Errorf("node %s did not stop within 60s", cfg.NodeID)
			}
		})
	})
}

// heartbeats subscribes to a node's heartbeats for the rest of the test,
// keeping up to n not yet read.
func (e *env) heartbeats(nodeID string, n int) <-chan *nats.Msg {
	e.t.Helper()
	ch := make(chan *nats.Msg, n)
	sub, err := e.conn.ChanSubscribe(schema.HeartbeatSubject(nodeID), ch)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// req sends a control request and decodes the reply; a contract error is
// returned as *schema.Error.
func (e *env) req(nodeID, op string, body any, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return e.conn.RequestJSON(ctx, schema.NodeSubject(nodeID, op), body, nil, out)
}

func (e *env) reqHdr(nodeID, op string, body any, hdr nats.Header, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return e.conn.RequestJSON(ctx, schema.NodeSubject(nodeID, op), body, hdr, out)
}

func (e *env) health(nodeID string) schema.Health {
	e.t.Helper()
	var h schema.Health
	if err := e.req(nodeID, schema.OpHealth, nil, &h); err != nil {
		e.t.Fatalf("health: %v", err)
	}
	return h
}

func (e *env) restart(nodeID string, body map[string]any) schema.RestartResult {
	e.t.Helper()
	var r schema.RestartResult
	if err := e.req(nodeID, schema.OpRestart, body, &r); err != nil {
		e.t.Fatalf("restart %v: %v", body, err)
	}
	return r
}

func (e *env) history(nodeID string) schema.History {
	e.t.Helper()
	var st schema.RestartStatus
	if err := e.req(nodeID, schema.OpRestartStatus, map[string]any{"include_history": true, "limit": 1000}, &st); err != nil {
		e.t.Fatal(err)
	}
	return *st.History
}

func (e *env) client(clientID, nodeID string) *client.Client {
	e.t.Helper()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := client.New(nc, clientID, nodeID, client.WithReplyPoll(500*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = c.Close()
		nc.Close()
	})
	return c
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

// ledger is the test's own record of what clients were told: the ground
// truth every check compares with, by content.
type ledger struct {
	mu    sync.Mutex
	tasks map[string]schema.Task // the last acknowledged content of each task
}

func newLedger() *ledger { return &ledger{tasks: map[string]schema.Task{}} }

func (l *ledger) ack(t *schema.Task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.tasks[t.TaskID]; ok && prev.UpdatedAt.After(t.UpdatedAt) {
		return
	}
	l.tasks[t.TaskID] = *t
}

// check reads every task back and compares each acknowledged one by content.
func (l *ledger) check(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all, err := c.AllTasks(ctx)
	if err != nil {
		t.Fatalf("reading tasks back: %v", err)
	}
	got := make(map[string]schema.Task, len(all))
	for _, x := range all {
		got[x.TaskID] = x
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lost, differ := 0, 0
	for id, want := range l.tasks {
		g, ok := got[id]
		switch {
		case !ok:
			lost++
			if lost <= 3 {
				t.Errorf("acknowledged task %s lost", id)
			}
		case !g.Equal(&want):
			differ++
			if differ <= 3 {
				a, _ := json.Marshal(g)
				b, _ := json.Marshal(want)
				t.Errorf("task %s differs:\n got  %s\n want %s", id, a, b)
			}
		}
	}
	if lost+differ > 0 {
		t.Fatalf("%d of %d acknowledged tasks lost, %d differ", lost, len(l.tasks), differ)
	}
}

func isCode(err error, code schema.Code) bool {
	var se *schema.Error
	return errors.As(err, &se) && se.Code == code
}

func mustCode(t *testing.T, err error, code schema.Code) *schema.Error {
	t.Helper()
	var se *schema.Error
	if !errors.As(err, &se) {
		t.Fatalf("got error %v, want %s", err, code)
	}
	if se.Code != code {
		t.Fatalf("got code %s (%s), want %s", se.Code, se.Message, code)
	}
	return se
}

func pidAlive(pid int) bool { return syscallKill(pid, 0) == nil }

var _ = fmt.Sprintf

// startNodeNoWait runs a supervisor until the test ends without waiting for
// its worker (which may never become ready); it returns once the node's
// endpoints answer.
func startNodeNoWait(t *testing.T, e *env, cfg node.Config) *node.Supervisor {
	t.Helper()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("node %s did not stop", cfg.NodeID)
		}
	})
	waitFor(t, 30*time.Second, "the node's endpoints", func() bool {
		var h schema.Health
		return e.req(cfg.NodeID, schema.OpHealth, nil, &h) == nil
	})
	return sup
}

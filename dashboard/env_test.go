package dashboard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/dashboard"
	"github.com/restartcoord/restartcoord/internal/hangtest"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// env is one embedded NATS with JetStream, optionally real nodes (this
// binary's workers) and a real coordinator, and the dashboard served by
// httptest: what `restartcoord dev --http` runs, in this process.
type env struct {
	t    testing.TB
	url  string // NATS
	conn *bus.Conn
	dir  string
	dash *dashboard.Server
	web  *httptest.Server
}

var quiet = slog.New(slog.DiscardHandler)

// newNATS starts the embedded server and initialises the store.
func newNATS(t testing.TB) *env {
	t.Helper()
	hangtest.Guard(t, 5*time.Minute)
	dir := t.TempDir()
	srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(filepath.Join(dir, "nats")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: srv.URL(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	bs, err := bus.NewStore(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Init(ctx, bs.JetStream(), bus.DefaultStoreConfig()); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, url: srv.URL(), conn: conn, dir: dir}
}

// startNodes runs node-1..node-n in this process and waits until each
// worker is ready.
func (e *env) startNodes(n int) {
	e.t.Helper()
	var readies []chan struct{}
	for i := range n {
		cfg := node.DefaultConfig(fmt.Sprintf("node-%d", i+1))
		cfg.NATS.URL, cfg.LogDir, cfg.Priority, cfg.Logger = e.url, filepath.Join(e.dir, "logs"), i, quiet
		cfg.HeartbeatInterval = 200 * time.Millisecond
		sup, err := node.NewSupervisor(cfg)
		if err != nil {
			e.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan struct{}), make(chan struct{})
		go func() { defer close(done); _ = sup.Run(ctx, ready) }()
		e.t.Cleanup(func() { cancel(); <-done })
		readies = append(readies, ready)
	}
	for i, r := range readies {
		select {
		case <-r:
		case <-time.After(time.Minute):
			e.t.Fatalf("node-%d not ready after a minute", i+1)
		}
	}
}

// startCoordinator runs a coordinator (with tweak applied to its config)
// and waits until it lists want nodes, every one healthy.
func (e *env) startCoordinator(want int, tweak func(*coordinator.Config)) {
	e.t.Helper()
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.NATS.URL, cfg.Logger, cfg.HeartbeatInterval = "coord-test", e.url, quiet, 200*time.Millisecond
	if tweak != nil {
		tweak(&cfg)
	}
	co, err := coordinator.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = co.Run(ctx, nil) }()
	e.t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(time.Minute)
	for {
		var l schema.NodeList
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := e.conn.RequestJSON(rctx, schema.ClusterSubject(schema.OpClusterNodes), schema.NodesRequest{}, nil, &l)
		rcancel()
		healthy := 0
		for _, n := range l.Nodes {
			if n.Healthy && n.WorkerPID > 0 {
				healthy++
			}
		}
		if err == nil && healthy == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the coordinator lists %d healthy nodes after a minute, want %d (last error: %v)", healthy, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startDashboard runs the dashboard on its own connection, served by
// httptest.
func (e *env) startDashboard(cfg dashboard.Config) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: e.url, Name: "dashboard"})
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := dashboard.New(conn, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(rctx) }()
	e.web = httptest.NewServer(d.Handler())
	e.dash = d
	// Stop the dashboard first (its event streams end), then the server.
	e.t.Cleanup(func() { stop(); <-done; e.web.Close(); conn.Close() })
}

// testWriter sends the dashboard's warnings to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// natsCLI finds the stock nats CLI (`make tools` puts natscli in ./bin).
// Without it the request goes through this process's NATS client; in CI
// it must be there.
func natsCLI(t testing.TB) string {
	if p, err := filepath.Abs(filepath.Join("..", "bin", "nats")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the nats CLI is missing in CI: .ci/run must run `make tools`")
	}
	return ""
}

// natsReq sends body to subject as an operator would: with `nats req`
// when the CLI is there, and returns the reply body.
func (e *env) natsReq(subject, body string) []byte {
	e.t.Helper()
	if cli := natsCLI(e.t); cli != "" {
		out, err := exec.Command(cli, "--server", e.url, "req", "--raw", "--timeout", "60s", subject, body).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				e.t.Fatalf("nats req %s %s: %v: %s", subject, body, err, ee.Stderr)
			}
			e.t.Fatalf("nats req %s %s: %v", subject, body, err)
		}
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := e.conn.Request(ctx, subject, []byte(body), nil)
	if err != nil {
		e.t.Fatalf("request %s %s: %v", subject, body, err)
	}
	return out
}

var _ io.Writer = testWriter{}

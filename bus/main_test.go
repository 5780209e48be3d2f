package bus_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/internal/leaktest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// testCtx is a context that ends with the test (or after d).
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts an embedded JetStream server in a temporary directory,
// stopped when the test ends. It does not sync every write: these tests
// check behaviour, not durability, and share a small machine.
func startServer(t *testing.T) *bus.Embedded {
	t.Helper()
	cfg := bus.DefaultEmbeddedConfig(filepath.Join(t.TempDir(), "js"))
	cfg.SyncAlways = false
	srv, err := bus.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// connect dials url with o (URL and Name filled in), closed when the test ends.
func connect(t *testing.T, url string, o bus.ConnOptions) *bus.Conn {
	t.Helper()
	o.URL = url
	if o.Name == "" {
		o.Name = t.Name()
	}
	conn, err := bus.Connect(testCtx(t, 10*time.Second), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// newStore is a fresh server, a connection and a Store; with init, the
// streams, buckets and object store are created with the defaults.
func newStore(t *testing.T, init bool) *bus.Store {
	t.Helper()
	srv := startServer(t)
	conn := connect(t, srv.URL(), bus.ConnOptions{})
	st, err := bus.NewStore(conn)
	if err != nil {
		t.Fatal(err)
	}
	if init {
		if err := bus.Init(testCtx(t, 10*time.Second), st.JetStream(), bus.DefaultStoreConfig()); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// eventually polls cond every 20 ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

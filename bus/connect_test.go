package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
)

func TestCheckServerVersion(t *testing.T) {
	tests := []struct {
		version string
		ok      bool
	}{
		{"2.10.9", false},
		{"2.10.99", false},
		{"2.9.25", false},
		{"1.99.99", false},
		{"", false},
		{"2.11.0", true},
		// The -suffix is ignored: a pre-release of 2.11.0 counts as 2.11.0.
		{"2.11.0-beta.1", true},
		{"2.11.3", true},
		{"v2.15.2", true},
		{"3.0.0", true},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			err := bus.CheckServerVersion(tc.version)
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckServerVersion(%q) = %v, want nil", tc.version, err)
				}
				return
			}
			if !errors.Is(err, bus.ErrServerTooOld) {
				t.Fatalf("CheckServerVersion(%q) = %v, want ErrServerTooOld", tc.version, err)
			}
		})
	}
	// The server this module embeds passes its own check.
	if err := bus.CheckServerVersion(server.VERSION); err != nil {
		t.Errorf("embedded nats-server %s refused: %v", server.VERSION, err)
	}
}

func TestResolveURL(t *testing.T) {
	t.Setenv("NATS_URL", "")
	if got := bus.ResolveURL(""); got != bus.DefaultURL {
		t.Errorf("no flag, no env: %q, want %q", got, bus.DefaultURL)
	}
	t.Setenv("NATS_URL", "nats://env:4222")
	if got := bus.ResolveURL(""); got != "nats://env:4222" {
		t.Errorf("env: %q", got)
	}
	if got := bus.ResolveURL("nats://flag:4222"); got != "nats://flag:4222" {
		t.Errorf("flag: %q", got)
	}
}

func TestConnectUnreachable(t *testing.T) {
	// A port nobody listens on: the connect error says where it tried.
	srv := startServer(t)
	url := srv.URL()
	srv.Stop()
	start := time.Now()
	_, err := bus.Connect(testCtx(t, 5*time.Second), bus.ConnOptions{URL: url, ConnectTimeout: time.Second})
	var ce *bus.ConnectError
	if !errors.As(err, &ce) || ce.URL != url {
		t.Fatalf("Connect to a stopped server = %v, want *ConnectError for %s", err, url)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Connect took %s", d)
	}
}

// startAuthServer starts a plain (no JetStream) server with two users:
// "operator" may only publish health requests and use inboxes, "svc" may do
// anything.
func startAuthServer(t *testing.T, restricted *server.Permissions) string {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "operator", Password: "op-secret", Permissions: restricted},
			{Username: "svc", Password: "svc-secret"},
		},
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s.ClientURL()
}

func TestRequestPermissionDeniedFailsFast(t *testing.T) {
	url := startAuthServer(t, &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"orch.v1.node.*.health", "_INBOX.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	})
	svc := connect(t, url, bus.ConnOptions{User: "svc", Password: "svc-secret"})
	ok := func(context.Context, []byte, nats.Header) (any, error) { return map[string]bool{"ok": true}, nil }
	s, err := svc.Serve(bus.ServiceConfig{Name: "orch-node", Version: "1.0.0", Endpoints: []bus.Endpoint{
		{Name: "restart", Subject: "orch.v1.node.n1.restart", Handler: ok},
		{Name: "health", Subject: "orch.v1.node.n1.health", Handler: ok},
		{Name: "prepare", Subject: "orch.v1.node.n1.shutdown.prepare", Handler: ok},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })

	op := connect(t, url, bus.ConnOptions{User: "operator", Password: "op-secret"})
	tests := []struct {
		subject string
		denied  bool
	}{
		{"orch.v1.node.n1.restart", true},
		{"orch.v1.node.n1.shutdown.prepare", true},
		{"orch.v1.node.n1.health", false},
		{"orch.v1.node.n1.restart", true}, // again: the watcher is not spent
		{"orch.v1.node.n2.restart", true}, // denied and nobody listens: still denied
		{"orch.v1.node.n1.health", false},
	}
	for _, tc := range tests {
		t.Run(tc.subject, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			data, err := op.Request(ctx, tc.subject, nil, nil)
			took := time.Since(start)
			if took > 2*time.Second {
				t.Errorf("request took %s; a denied or allowed request must not wait for its deadline", took)
			}
			if tc.denied {
				if !errors.Is(err, bus.ErrPermissionDenied) {
					t.Fatalf("Request(%s) = %q, %v; want ErrPermissionDenied", tc.subject, data, err)
				}
				if !strings.Contains(err.Error(), tc.subject) {
					t.Errorf("error %q does not name the subject", err)
				}
				if bus.Retryable(err) {
					t.Errorf("a permission refusal must not be retryable")
				}
				return
			}
			if err != nil || string(data) != `{"ok":true}` {
				t.Fatalf("Request(%s) = %q, %v; want the reply", tc.subject, data, err)
			}
		})
	}

	t.Run("concurrent", func(t *testing.T) {
		// A denied request and an allowed one at the same time: each gets its
		// own answer.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		errs := make(chan error, 2)
		go func() {
			_, err := op.Request(ctx, "orch.v1.node.n1.restart", nil, nil)
			errs <- err
		}()
		go func() {
			_, err := op.Request(ctx, "orch.v1.node.n1.health", nil, nil)
			errs <- err
		}()
		var denied, okCount int
		for range 2 {
			select {
			case err := <-errs:
				switch {
				case err == nil:
					okCount++
				case errors.Is(err, bus.ErrPermissionDenied):
					denied++
				default:
					t.Errorf("unexpected error %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("concurrent requests did not answer within 2s")
			}
		}
		if denied != 1 || okCount != 1 {
			t.Errorf("denied=%d ok=%d, want 1 and 1", denied, okCount)
		}
	})
}

func TestRequestDeniedReplyInboxFailsFast(t *testing.T) {
	// The operator may publish requests but not subscribe to inboxes: its
	// replies can never arrive, and the server says so at once.
	url := startAuthServer(t, &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"orch.v1.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"nothing.here"}},
	})
	svc := connect(t, url, bus.ConnOptions{User: "svc", Password: "svc-secret"})
	s, err := svc.Serve(bus.ServiceConfig{Name: "orch-node", Version: "1.0.0", Endpoints: []bus.Endpoint{
		{Name: "health", Subject: "orch.v1.node.n1.health",
			Handler: func(context.Context, []byte, nats.Header) (any, error) { return "ok", nil }},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	op := connect(t, url, bus.ConnOptions{User: "operator", Password: "op-secret"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	_, err = op.Request(ctx, "orch.v1.node.n1.health", nil, nil)
	if !errors.Is(err, bus.ErrPermissionDenied) {
		t.Errorf("Request = %v, want ErrPermissionDenied", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("request took %s, want a fast failure", took)
	}
}

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNatsVerbServesJetStreamThatInitUses runs `restartcoord nats` from a
// configuration file like deploy/nats/cluster.conf (server name from the
// environment), then `init --wait` against it, then stops it with its context.
func TestNatsVerbServesJetStreamThatInitUses(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("server_name: $NATS_NAME\nlisten: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", port, filepath.Join(dir, "js"))
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_NAME", "test-1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runNats(ctx, []string{"--config", conf}) }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	// init --wait rides the moment before the server listens.
	if err := runInit(context.Background(), []string{"--server", url, "--wait", "20s"}); err != nil {
		t.Fatalf("init against restartcoord nats: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "js")); err != nil {
		t.Fatalf("no JetStream store in the configured store_dir: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("nats verb: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nats verb did not stop with its context")
	}
}

func TestNatsVerbRefusesBadConfigs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no config", nil, "--config is required"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.conf")}, "no such file"},
		{"no jetstream", []string{"-c", write("nojs.conf", "listen: 127.0.0.1:-1\n")}, "jetstream is not enabled"},
		{"syntax error", []string{"-c", write("bad.conf", "listen: {{{\n")}, "bad.conf"},
		{"extra argument", []string{"-c", write("ok.conf", "listen: 127.0.0.1:-1\n"), "extra"}, "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := runNats(context.Background(), tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
			if code := classifyExit(err); code != exitUsage {
				t.Fatalf("exit code %d, want %d", code, exitUsage)
			}
		})
	}
}

func TestInitWaitIsValidated(t *testing.T) {
	err := runInit(context.Background(), []string{"--wait", "-1s"})
	if err == nil || !strings.Contains(err.Error(), "--wait") || classifyExit(err) != exitUsage {
		t.Fatalf("init --wait -1s: %v", err)
	}
}

package bus_test

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/restartcoord/restartcoord/bus"
)

func TestStartEmbeddedRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  bus.EmbeddedConfig
		want string
	}{
		{"no store dir", bus.EmbeddedConfig{Host: "127.0.0.1"}, "store directory"},
		{"negative port", bus.EmbeddedConfig{StoreDir: t.TempDir(), Port: -1}, "port"},
		{"port too big", bus.EmbeddedConfig{StoreDir: t.TempDir(), Port: 70000}, "port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := bus.StartEmbedded(tc.cfg)
			if err == nil {
				srv.Stop()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestStartEmbedded(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	cfg := bus.DefaultEmbeddedConfig(filepath.Join(t.TempDir(), "nested", "js"))
	cfg.SyncAlways = false
	cfg.ServerName = "embedded-test"
	cfg.Logf = func(f string, a ...any) {
		mu.Lock()
		lines = append(lines, f)
		mu.Unlock()
	}
	srv, err := bus.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if !strings.HasPrefix(srv.URL(), "nats://127.0.0.1:") {
		t.Errorf("URL %q", srv.URL())
	}
	if !srv.JetStreamEnabled() {
		t.Error("JetStream not enabled")
	}
	if srv.Name() != "embedded-test" {
		t.Errorf("server name %q", srv.Name())
	}
	conn := connect(t, srv.URL(), bus.ConnOptions{})
	if v := conn.ConnectedServerVersion(); bus.CheckServerVersion(v) != nil {
		t.Errorf("embedded server version %q refused", v)
	}
	mu.Lock()
	n := len(lines)
	mu.Unlock()
	if n == 0 {
		t.Error("Logf received no server notices")
	}
}

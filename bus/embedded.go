package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures an in-process nats-server with JetStream.
type EmbeddedConfig struct {
	// Host to listen on (127.0.0.1).
	Host string
	// Port for clients; 0 picks a free port.
	Port int
	// StoreDir holds JetStream data; required.
	StoreDir string
	// SyncAlways fsyncs every JetStream write before acknowledging it
	// (default true: an acknowledged write survives power loss).
	SyncAlways bool
	// ServerName is the server's name (generated when empty).
	ServerName string
	// Logf, when set, receives the server's notices and errors.
	Logf func(format string, args ...any)
}

// DefaultEmbeddedConfig is a single server on 127.0.0.1 that syncs every write.
func DefaultEmbeddedConfig(storeDir string) EmbeddedConfig {
	return EmbeddedConfig{Host: "127.0.0.1", Port: 0, StoreDir: storeDir, SyncAlways: true}
}

func (c EmbeddedConfig) options() (*server.Options, error) {
	if c.StoreDir == "" {
		return nil, errors.New("bus: embedded server needs a store directory")
	}
	if c.Port < 0 || c.Port > 65535 {
		return nil, fmt.Errorf("bus: port must be 0..65535, got %d", c.Port)
	}
	port := c.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	host := c.Host
	if host == "" {
		host = "127.0.0.1"
	}
	return &server.Options{
		ServerName: c.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   c.StoreDir,
		SyncAlways: c.SyncAlways,
		NoSigs:     true,
		NoLog:      c.Logf == nil,
		// Keep the server's own limits generous: the request stream holds
		// up to 100 requests per client and snapshots go to the object store.
		MaxPayload: 8 << 20,
	}, nil
}

// Embedded is a running in-process nats-server.
type Embedded struct {
	*server.Server
}

// StartEmbedded starts a single server and waits until it takes clients and
// JetStream is enabled.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	return start(opts, cfg.Logf)
}

// start starts a server with opts (creating its store directory) and waits
// until it takes clients.
func start(opts *server.Options, logf func(string, ...any)) (*Embedded, error) {
	if err := os.MkdirAll(opts.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("bus: store dir: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	if logf != nil {
		s.SetLoggerV2(&logAdapter{logf}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("bus: embedded server not ready within 10s (port taken?)")
	}
	return &Embedded{s}, nil
}

// URL is the client URL of the server.
func (e *Embedded) URL() string { return e.ClientURL() }

// Stop shuts the server down and waits for it.
func (e *Embedded) Stop() {
	e.Shutdown()
	e.WaitForShutdown()
}

type logAdapter struct{ logf func(string, ...any) }

func (l *logAdapter) Noticef(f string, a ...any) { l.logf("nats: "+f, a...) }
func (l *logAdapter) Warnf(f string, a ...any)   { l.logf("nats warning: "+f, a...) }
func (l *logAdapter) Fatalf(f string, a ...any)  { l.logf("nats fatal: "+f, a...) }
func (l *logAdapter) Errorf(f string, a ...any)  { l.logf("nats error: "+f, a...) }
func (l *logAdapter) Debugf(string, ...any)      {}
func (l *logAdapter) Tracef(string, ...any)      {}

// Cluster is N in-process servers routed on loopback with clustered
// JetStream, for tests and benchmarks.
type Cluster struct {
	Servers []*Embedded
	opts    []*server.Options
	dir     string
}

// StartCluster starts n servers (n >= 3 for R3 streams) under dir and waits
// until JetStream has a meta leader (measured: ~0.3 s, rarely ~5 s).
func StartCluster(ctx context.Context, n int, dir string) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("bus: cluster size must be >= 1, got %d", n)
	}
	ports := make([]int, n)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	c := &Cluster{dir: dir}
	for i := range n {
		var routes []*url.URL
		for j, p := range ports {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
			}
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("s%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("s%d", i+1)),
			SyncAlways: true,
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: 8 << 20,
			Cluster: server.ClusterOpts{
				Name: "restartcoord", Host: "127.0.0.1", Port: ports[i],
			},
			Routes: routes,
		}
		c.opts = append(c.opts, opts)
	}
	for i := range n {
		if err := c.Start(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitJetStream(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Start (re)starts server i with its original options and data.
func (c *Cluster) Start(i int) error {
	opts := *c.opts[i]
	if i < len(c.Servers) && c.Servers[i] != nil && c.Servers[i].Running() {
		return fmt.Errorf("bus: server %d already running", i)
	}
	s, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("bus: cluster server %d: %w", i, err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("bus: cluster server %d not ready", i)
	}
	// Keep the client port it got, so a restart reuses it and clients
	// reconnect to the same URL.
	c.opts[i].Port = s.Addr().(*net.TCPAddr).Port
	for len(c.Servers) <= i {
		c.Servers = append(c.Servers, nil)
	}
	c.Servers[i] = &Embedded{s}
	return nil
}

// StopServer stops server i (it can be started again with Start).
func (c *Cluster) StopServer(i int) { c.Servers[i].Stop() }

// URLs is a comma-separated list of every server's client URL.
func (c *Cluster) URLs() string {
	var out string
	for i, o := range c.opts {
		if i > 0 {
			out += ","
		}
		out += fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return out
}

// WaitJetStream waits until the cluster has a JetStream meta leader that
// sees every running server as a peer and every running server is healthy
// (an R3 stream created earlier can fail placement).
func (c *Cluster) WaitJetStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		running, healthy, leaderPeers := 0, 0, -1
		for _, s := range c.Servers {
			if s == nil || !s.Running() {
				continue
			}
			running++
			if s.Healthz(nil).Error == "" {
				healthy++
			}
			if s.JetStreamIsLeader() {
				leaderPeers = len(s.JetStreamClusterPeers())
			}
		}
		if running > 0 && healthy == running && leaderPeers >= running {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("bus: no JetStream meta leader within 15s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts every server down.
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		if s != nil {
			s.Stop()
		}
	}
}

// FreePort asks the system for a TCP port free on 127.0.0.1 now (another
// process may take it before it is used).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartFromFile starts a nats-server from a nats-server configuration file
// (the format of `nats-server -c`), as `restartcoord nats` does. JetStream
// must be enabled in it. A configuration that does not fsync every write
// before acknowledging it (jetstream { sync_interval: always }) is logged as a
// warning: an acknowledged write could then be lost on power loss.
func StartFromFile(path string, logf func(string, ...any)) (*Embedded, error) {
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("bus: %s: %w", path, err)
	}
	if !opts.JetStream {
		return nil, fmt.Errorf("bus: %s: jetstream is not enabled (restartcoord keeps its state in JetStream)", path)
	}
	if opts.StoreDir == "" {
		return nil, fmt.Errorf("bus: %s: jetstream needs a store_dir", path)
	}
	opts.NoSigs = true
	opts.NoLog = logf == nil
	if !opts.SyncAlways && logf != nil {
		logf("nats warning: %s: jetstream sync_interval is not 'always': acknowledged writes can be lost on power loss", path)
	}
	return start(opts, logf)
}

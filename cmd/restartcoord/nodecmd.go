package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/internal/metrics"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

const nodeUsage = "restartcoord node --id NODE [--group G] [--priority N] [--server URL] [--config FILE] [--log-dir DIR] [--state-schema 1|2] [--no-fast-takeover] [--metrics-addr ADDR] [--slow-restart 60s] [--backup-max-age 168h] [--log-max-size BYTES]"

func runNode(ctx context.Context, args []string) error {
	fs := newFlags("node", nodeUsage)
	var cf connFlags
	cf.register(fs)
	cfg := node.DefaultConfig("")
	fs.StringVar(&cfg.NodeID, "id", "", "node id (letters, digits, '-', '_')")
	fs.StringVar(&cfg.Group, "group", cfg.Group, "group the node belongs to")
	fs.IntVar(&cfg.Priority, "priority", 0, "roll order: lower first (a leader gets a high number)")
	fs.StringVar(&cfg.ConfigFile, "config", "", "configuration file (JSON with config_version), used when ORCH_CONFIG has no entry")
	fs.StringVar(&cfg.LogDir, "log-dir", cfg.LogDir, "where the worker's log is kept")
	fs.IntVar(&cfg.StateSchema, "state-schema", cfg.StateSchema, "schema version snapshots are written in (1 to test a schema_migration restart)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "heartbeat interval")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "periodic snapshot interval")
	fs.DurationVar(&cfg.SlowRestart, "slow-restart", cfg.SlowRestart, "a restart longer than this raises slow_restart")
	fs.DurationVar(&cfg.BackupMaxAge, "backup-max-age", cfg.BackupMaxAge, "a newest backup older than this (or none on a node running this long) raises backup_age")
	fs.Int64Var(&cfg.LogMaxSize, "log-max-size", cfg.LogMaxSize, "the node's log file (LOG-DIR/ID.log) above this many bytes raises log_size")
	noFast := fs.Bool("no-fast-takeover", false, "after a crash, wait out the node id lease even when its holder is proven dead on this machine")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. :9100); empty: none")
	pos, err := parse(fs, args, nodeUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, nodeUsage)
	}
	if cfg.NodeID == "" {
		return usageErr("--id is required (usage: %s)", nodeUsage)
	}
	cfg.FastTakeover = !*noFast
	cfg.NATS = cf.options("")
	cfg.Version = version
	lg, err := logger(*level)
	if err != nil {
		return err
	}
	cfg.Logger = lg
	var reg *prometheus.Registry
	if *metricsAddr != "" {
		// Labelled with the node as restartcoord dev labels each of its
		// nodes: the series read the same in both.
		reg = metrics.NewRegistry()
		cfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.NodeID}, reg)
	}
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	if reg != nil {
		stop, err := serveNodeMetrics(*metricsAddr, reg, lg)
		if err != nil {
			return usageErr("--metrics-addr %q: %v", *metricsAddr, err)
		}
		defer stop()
	}
	return sup.Run(ctx, nil)
}

// serveNodeMetrics serves reg at http://addr/metrics until stop is called. The
// address is bound before it returns, so a taken port fails the start.
func serveNodeMetrics(addr string, reg *prometheus.Registry, lg *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			lg.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	lg.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErr("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

const initUsage = "restartcoord init [--server URL] [--replicas N] [--buffer 100] [--buffer-expiration 300s] [--wait 0s]"

func runInit(ctx context.Context, args []string) error {
	fs := newFlags("init", initUsage)
	var cf connFlags
	cf.register(fs)
	sc := bus.DefaultStoreConfig()
	fs.IntVar(&sc.Replicas, "replicas", sc.Replicas, "replicas of every stream and bucket (3 on a cluster)")
	fs.Int64Var(&sc.RequestBuffer, "buffer", sc.RequestBuffer, "per-client request buffer")
	fs.DurationVar(&sc.BufferExpiration, "buffer-expiration", sc.BufferExpiration, "how long a buffered request waits")
	wait := fs.Duration("wait", 0, "keep retrying this long while NATS or its JetStream cluster is not ready")
	pos, err := parse(fs, args, initUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, initUsage)
	}
	if err := sc.Validate(); err != nil {
		return usageErr("%v", err)
	}
	if *wait < 0 {
		return usageErr("--wait must not be negative, got %s", *wait)
	}
	// --wait rides a cluster that is still starting: servers not listening
	// yet, JetStream without a meta leader or without enough peers for R3.
	deadline := time.Now().Add(*wait)
	for attempt := 1; ; attempt++ {
		err := initOnce(ctx, &cf, sc)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "init: attempt %d: %v; retrying (until %s)\n", attempt, err, deadline.Format(time.TimeOnly))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	fmt.Printf("initialised %s, %s, %s, %s, %s; buckets %s, %s, %s; object store %s (replicas %d)\n",
		schema.StreamRequests, schema.StreamJournal, schema.StreamEvents, schema.StreamAlerts, schema.StreamAudit,
		schema.BucketNodes, schema.BucketLeases, schema.BucketConfig, schema.ObjectSnapshots, sc.Replicas)
	return nil
}

func initOnce(ctx context.Context, cf *connFlags, sc bus.StoreConfig) error {
	conn, err := cf.connect(ctx, "restartcoord-init")
	if err != nil {
		return err
	}
	defer conn.Close()
	bs, err := bus.NewStore(conn)
	if err != nil {
		return err
	}
	return bus.Init(ctx, bs.JetStream(), sc)
}

// embeddedNATS starts the embedded server for dev and demo, running init on
// a new data directory and the start-up check on an existing one.
func embeddedNATS(ctx context.Context, dataDir string, port int, logf func(string, ...any)) (*bus.Embedded, error) {
	jsDir := filepath.Join(dataDir, "jetstream")
	_, statErr := os.Stat(jsDir)
	fresh := os.IsNotExist(statErr)
	cfg := bus.DefaultEmbeddedConfig(jsDir)
	cfg.Port = port
	cfg.Logf = logf
	srv, err := bus.StartEmbedded(cfg)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(cctx, bus.ConnOptions{URL: srv.URL(), Name: "restartcoord-dev-init"})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	defer conn.Close()
	bs, err := bus.NewStore(conn)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	if fresh {
		err = bus.Init(cctx, bs.JetStream(), bus.DefaultStoreConfig())
	} else {
		err = bus.Check(cctx, bs.JetStream())
	}
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return srv, nil
}

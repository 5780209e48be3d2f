package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// Config configures a node's supervisor (and, through it, its worker).
type Config struct {
	NodeID   string
	Group    string // "default"
	Priority int    // rolls restart lower priorities first
	Version  string // build version reported in health and heartbeats

	// NATS says how supervisor and worker reach NATS.
	NATS bus.ConnOptions

	// LogDir keeps the worker's stdout and stderr, one file per node.
	LogDir string
	// ConfigFile, when set, is read for the node's configuration when the
	// ORCH_CONFIG bucket has no entry for the node or its group.
	ConfigFile string
	// StateSchema is the schema version the worker writes snapshots in (the
	// binary's current one; 1 to exercise a schema_migration restart).
	StateSchema int

	HeartbeatInterval time.Duration // 1 s
	WatchdogInterval  time.Duration // 250 ms: supervisor pings the worker
	WatchdogTimeout   time.Duration // 1.5 s without an answer: the worker is killed
	StartTimeout      time.Duration // 30 s for a new worker to report ready
	SuspendTimeout    time.Duration // 5 s for running jobs to reach a step boundary
	SnapshotInterval  time.Duration // 5 min between periodic snapshots
	KeepSnapshots     int           // 10
	MaxStateSize      int64         // 10 MiB: warn above (state_size)
	BufferExpiration  time.Duration // 300 s: older requests are answered EXPIRED
	ReplyKeep         time.Duration // 15 min: kept replies stay readable at least this long
	CleanupInterval   time.Duration // 60 s between session cleanups (the seed's cleanup_interval)
	SessionIdle       time.Duration // 300 s: a session idle this long with nothing buffered expires
	ReconnectWindow   time.Duration // 60 s (the seed's): a client back later than this after a restart failed to reconnect
	CrashBackoffStart time.Duration // 50 ms: a first crash is restarted at once
	CrashBackoffMax   time.Duration // 30 s
	HealthyReset      time.Duration // 60 s healthy resets the crash backoff
	LeaseTTL          time.Duration // 10 s: the node-id lease

	// Alert thresholds (docs/ALERTS.md): a successful restart that took
	// longer than SlowRestart raises slow_restart; a newest backup (any
	// snapshot `state backups` lists) older than BackupMaxAge, or none on
	// a node that has run that long, raises backup_age; the worker's log
	// file (LogDir/<node id>.log) above LogMaxSize raises log_size.
	SlowRestart  time.Duration // 60 s
	BackupMaxAge time.Duration // 7 days
	LogMaxSize   int64         // 100 MiB

	// FastTakeover (on by default) lets a supervisor that finds its node id
	// held by a process proven dead on this machine (a whole node killed
	// with -9 and restarted at once) take the lease at once by
	// compare-and-set, instead of waiting out its TTL. Off, such a holder
	// is waited for like any silent one: kept for comparison in the
	// benchmark, and as a way back. It never takes a lease from a holder
	// that is not proven dead.
	FastTakeover bool

	// Executable and Args start the worker (default: this binary; the
	// worker role is chosen by environment, see IsWorker).
	Executable string
	Args       []string

	Logger *slog.Logger

	// Metrics, when set, is where the supervisor registers its series
	// (docs/METRICS.md); nil: no metrics, at no cost. The series carry no
	// node label: wrap the registerer with one
	// (prometheus.WrapRegistererWith) to serve several nodes from one
	// registry, as restartcoord dev and restartcoord node do.
	Metrics prometheus.Registerer `json:"-"`
}

// DefaultConfig is a node with the contract's defaults.
func DefaultConfig(nodeID string) Config {
	return Config{
		NodeID: nodeID, Group: "default", Version: "dev",
		NATS: bus.ConnOptions{URL: bus.DefaultURL}, StateSchema: schema.CurrentSchemaVersion,
		HeartbeatInterval: time.Second, WatchdogInterval: 250 * time.Millisecond,
		WatchdogTimeout: 1500 * time.Millisecond, StartTimeout: 30 * time.Second,
		SuspendTimeout: 5 * time.Second, SnapshotInterval: 5 * time.Minute, KeepSnapshots: 10,
		MaxStateSize: 10 << 20, BufferExpiration: 300 * time.Second, ReplyKeep: 15 * time.Minute,
		CleanupInterval: 60 * time.Second, SessionIdle: 300 * time.Second, ReconnectWindow: schema.ReconnectWindow,
		CrashBackoffStart: 50 * time.Millisecond, CrashBackoffMax: 30 * time.Second,
		HealthyReset: 60 * time.Second, LeaseTTL: 10 * time.Second, FastTakeover: true,
		SlowRestart: 60 * time.Second, BackupMaxAge: 7 * 24 * time.Hour, LogMaxSize: 100 << 20,
		LogDir: filepath.Join(os.TempDir(), "restartcoord", "logs"),
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if !schema.ValidToken(c.NodeID) {
		errs = append(errs, fmt.Errorf("node id %q: must be 1..64 letters, digits, '-' or '_'", c.NodeID))
	}
	if !schema.ValidToken(c.Group) {
		errs = append(errs, fmt.Errorf("group %q: must be 1..64 letters, digits, '-' or '_'", c.Group))
	}
	if c.StateSchema < schema.MinSchemaVersion || c.StateSchema > schema.CurrentSchemaVersion {
		errs = append(errs, fmt.Errorf("state schema must be %d..%d, got %d", schema.MinSchemaVersion, schema.CurrentSchemaVersion, c.StateSchema))
	}
	pos := map[string]time.Duration{"heartbeat interval": c.HeartbeatInterval, "watchdog interval": c.WatchdogInterval,
		"watchdog timeout": c.WatchdogTimeout, "start timeout": c.StartTimeout, "suspend timeout": c.SuspendTimeout,
		"snapshot interval": c.SnapshotInterval, "buffer expiration": c.BufferExpiration, "reply keep": c.ReplyKeep,
		"cleanup interval": c.CleanupInterval, "session idle": c.SessionIdle, "reconnect window": c.ReconnectWindow,
		"crash backoff start": c.CrashBackoffStart, "crash backoff max": c.CrashBackoffMax,
		"healthy reset": c.HealthyReset, "lease ttl": c.LeaseTTL, "slow restart": c.SlowRestart,
		"backup max age": c.BackupMaxAge}
	for name, d := range pos {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.WatchdogTimeout < 2*c.WatchdogInterval {
		errs = append(errs, fmt.Errorf("watchdog timeout (%s) must be at least twice the interval (%s)", c.WatchdogTimeout, c.WatchdogInterval))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("lease ttl must be at least 1s, got %s", c.LeaseTTL))
	}
	if c.KeepSnapshots < 2 || c.KeepSnapshots > 1000 {
		errs = append(errs, fmt.Errorf("snapshots kept must be 2..1000, got %d", c.KeepSnapshots))
	}
	if c.MaxStateSize <= 0 {
		errs = append(errs, fmt.Errorf("max state size must be positive, got %d", c.MaxStateSize))
	}
	if c.LogMaxSize <= 0 {
		errs = append(errs, fmt.Errorf("log max size must be positive, got %d", c.LogMaxSize))
	}
	if c.LogDir == "" {
		errs = append(errs, errors.New("log dir must be set"))
	}
	return errors.Join(errs...)
}

// loadNodeConfig reads the node's configuration: ORCH_CONFIG key <node_id>,
// else group.<group>, else the config file, else version "0".
// It reads at the bucket's leader: a configuration update's restart comes
// right after the operator's write, which a lagging replica may not hold.
func (s *Supervisor) loadNodeConfig(ctx context.Context) (NodeConfig, error) {
	for _, key := range []string{s.cfg.NodeID, "group." + s.cfg.Group} {
		v, _, err := bus.KVGet(ctx, s.bs.JetStream(), schema.BucketConfig, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return NodeConfig{}, err
		}
		return ParseNodeConfig(v)
	}
	if s.cfg.ConfigFile != "" {
		data, err := os.ReadFile(s.cfg.ConfigFile)
		if err != nil {
			return NodeConfig{}, fmt.Errorf("node: config file: %w", err)
		}
		return ParseNodeConfig(data)
	}
	return NodeConfig{ConfigVersion: "0"}, nil
}

// ParseNodeConfig decodes a node configuration strictly.
func ParseNodeConfig(data []byte) (NodeConfig, error) {
	var c NodeConfig
	if err := schema.Decode(data, &c); err != nil {
		return NodeConfig{}, fmt.Errorf("node: configuration: %w", err)
	}
	return c, nil
}

// Validate implements schema.Validator.
func (c *NodeConfig) Validate() error {
	if c.ConfigVersion == "" || len(c.ConfigVersion) > 64 {
		return schema.Invalid("config_version", "config_version must be 1..64 characters")
	}
	return nil
}

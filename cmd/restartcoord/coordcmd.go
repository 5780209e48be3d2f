package main

import (
	"context"

	"github.com/restartcoord/restartcoord/coordinator"
)

const coordUsage = "restartcoord coordinator [--id ID] [--server URL] [--lease-ttl 8s] [--heartbeat 1s] [--log-level info]"

// runCoordinator runs one coordinator (run two or three: one leads).
func runCoordinator(ctx context.Context, args []string) error {
	fs := newFlags("coordinator", coordUsage)
	var cf connFlags
	cf.register(fs)
	cfg := coordinator.DefaultConfig()
	fs.StringVar(&cfg.ID, "id", "", "instance id (default: coord-<host>-<random>)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "leader lease TTL (longer than a JetStream failover)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "the nodes' heartbeat interval")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := parse(fs, args, coordUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, coordUsage)
	}
	lg, err := logger(*level)
	if err != nil {
		return err
	}
	cfg.NATS, cfg.Version, cfg.Logger = cf.options(""), version, lg
	co, err := coordinator.New(cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	return co.Run(ctx, nil)
}

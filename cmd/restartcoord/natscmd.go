package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/restartcoord/restartcoord/bus"
)

const natsUsage = "restartcoord nats --config FILE   (a nats-server configuration file with JetStream enabled)"

// runNats runs a nats-server from a configuration file, so that one image
// (or one binary) serves every role: nats, coordinator and node. It stops on
// SIGTERM or Ctrl-C, letting the server shut down cleanly.
func runNats(ctx context.Context, args []string) error {
	fs := newFlags("nats", natsUsage)
	config := fs.String("config", "", "nats-server configuration file")
	fs.StringVar(config, "c", "", "shorthand for --config")
	pos, err := parse(fs, args, natsUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, natsUsage)
	}
	if *config == "" {
		return usageErr("--config is required (usage: %s)", natsUsage)
	}
	if _, err := os.Stat(*config); err != nil {
		return usageErr("--config: %v", err)
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, a...))
	}
	s, err := bus.StartFromFile(*config, logf)
	if err != nil {
		return usageErr("%v", err)
	}
	logf("restartcoord nats %s: ready for clients on %s", version, s.ClientURL())
	<-ctx.Done()
	logf("restartcoord nats: shutting down")
	s.Stop()
	return nil
}

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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/internal/metrics"
	"github.com/restartcoord/restartcoord/node"
)

const devUsage = "restartcoord dev [--nodes 3] [--nats-port 4222] [--data DIR] [--http ADDR] [--alerts-config FILE | --alert-webhook URL [--alert-webhook-secret-file FILE]] [--unhealthy-alert-after 5m] [--log-level info]"

func runDev(ctx context.Context, args []string) error {
	fs := newFlags("dev", devUsage)
	nodes := fs.Int("nodes", 3, "number of nodes (node-1..node-N)")
	port := fs.Int("nats-port", 4222, "NATS client port on 127.0.0.1 (0 picks a free one)")
	data := fs.String("data", ".restartcoord-dev", "data directory (JetStream store and worker logs); reuse it to keep state")
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	httpAddr := fs.String("http", "", "serve the dashboard at / and the metrics of every node and the coordinator at /metrics on HOST:PORT (e.g. 127.0.0.1:8080)")
	var af alertFlags
	af.register(fs)
	unhealthyAfter := fs.Duration("unhealthy-alert-after", coordinator.DefaultUnhealthyAlertAfter,
		"a node that answers but stays unhealthy this long raises health_check_failed")
	pos, err := parse(fs, args, devUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, devUsage)
	}
	var alerts coordinator.Config // the alert flags, checked before anything starts
	if err := af.apply(&alerts); err != nil {
		return err
	}
	if *nodes < 1 || *nodes > 100 {
		return usageErr("--nodes must be 1..100, got %d", *nodes)
	}
	if *unhealthyAfter <= 0 {
		return usageErr("--unhealthy-alert-after must be positive, got %s", *unhealthyAfter)
	}
	if *port < 0 || *port > 65535 {
		return usageErr("--nats-port must be 0..65535, got %d", *port)
	}
	lg, err := logger(*level)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	// One registry for everything dev runs: each node's series carry a
	// node label, so the supervisors' identical names do not collide.
	var ln net.Listener
	var reg *prometheus.Registry
	if *httpAddr != "" {
		if ln, err = listenHTTP(*httpAddr); err != nil {
			return err
		}
		defer ln.Close()
		reg = metrics.NewRegistry()
	}
	srv, err := embeddedNATS(ctx, dir, *port, nil)
	if err != nil {
		return err
	}
	defer srv.Stop()
	url := srv.URL()

	runCtx, stopNodes := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	errc := make(chan error, *nodes+3)
	readies := make([]chan struct{}, *nodes)
	for i := range *nodes {
		cfg := node.DefaultConfig(fmt.Sprintf("node-%d", i+1))
		cfg.NATS.URL = url
		cfg.Version = version
		cfg.LogDir = filepath.Join(dir, "logs")
		cfg.Priority = i
		cfg.Logger = lg
		if reg != nil {
			cfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.NodeID}, reg)
		}
		sup, err := node.NewSupervisor(cfg)
		if err != nil {
			stopNodes()
			return err
		}
		readies[i] = make(chan struct{})
		wg.Add(1)
		go func(name string, ready chan struct{}) {
			defer wg.Done()
			if err := sup.Run(runCtx, ready); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}(cfg.NodeID, readies[i])
	}
	ccfg := coordinator.DefaultConfig()
	ccfg.ID, ccfg.NATS.URL, ccfg.Version, ccfg.Logger = "coord-dev", url, version, lg
	ccfg.UnhealthyAlertAfter = *unhealthyAfter
	ccfg.Alerts, ccfg.AlertsText = alerts.Alerts, alerts.AlertsText
	if reg != nil {
		ccfg.Metrics = reg
	}
	co, err := coordinator.New(ccfg)
	if err != nil {
		stopNodes()
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := co.Run(runCtx, nil); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("coordinator: %w", err)
		}
	}()
	// The web server and dashboard stop first at Ctrl-C (webCtx), so the
	// page's event streams end before the nodes drain.
	webCtx, stopWeb := context.WithCancel(runCtx)
	defer stopWeb()
	var webWG sync.WaitGroup
	if ln != nil {
		var dash atomic.Pointer[http.Handler]
		mux := webMux(reg, &dash)
		webWG.Add(2)
		go func() {
			defer webWG.Done()
			if err := serveHTTP(webCtx, ln, mux); err != nil {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
		go func() {
			defer webWG.Done()
			if err := runDashboard(webCtx, bus.ConnOptions{URL: url, Name: "restartcoord-dashboard"}, lg, func(h http.Handler) { dash.Store(&h) }); err != nil {
				errc <- fmt.Errorf("dashboard: %w", err)
			}
		}()
	}
	started := time.Now()
	for i, r := range readies {
		select {
		case <-r:
		case err := <-errc:
			stopWeb()
			webWG.Wait()
			stopNodes()
			wg.Wait()
			return err
		case <-ctx.Done():
			stopWeb()
			webWG.Wait()
			stopNodes()
			wg.Wait()
			return nil
		}
		_ = i
	}
	fmt.Printf(`restartcoord dev: NATS with JetStream at %s, %d nodes and a coordinator ready in %.1fs (data in %s)

  export NATS_URL=%s
  nats req orch.v1.node.node-1.health '{}'
  nats req orch.v1.node.node-1.restart '{"reason":"manual_request"}'
  nats req orch.v1.node.node-1.restart.status '{"include_history":true}'
  nats micro ls
  nats req orch.v1.cluster.nodes '{}'
  restartcoord roll --group default --max-unavailable 1
  restartcoord health node-1      (or restart, status, prepare, reconnect-test, state backups)

worker logs: %s
Ctrl-C stops the nodes (each drains and snapshots) and the server.
`, url, *nodes, time.Since(started).Seconds(), dir, url, filepath.Join(dir, "logs"))
	if ln != nil {
		fmt.Printf("\ndashboard: %s\nmetrics:   %s\n", webURL(ln, "/"), webURL(ln, "/metrics"))
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "restartcoord dev:", err)
	}
	fmt.Println("\nstopping: draining nodes...")
	stopWeb()
	webWG.Wait()
	stopNodes()
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	fmt.Println("stopped.")
	slog.Default()
	return errors.Join(errs...)
}

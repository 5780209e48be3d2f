package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/dashboard"
	"github.com/restartcoord/restartcoord/internal/metrics"
)

const coordUsage = "restartcoord coordinator [--id ID] [--server URL] [--http ADDR] [--alerts-config FILE | --alert-webhook URL [--alert-webhook-secret-file FILE]] [--lease-ttl 8s] [--heartbeat 1s] [--unhealthy-alert-after 5m] [--log-level info]"

// runCoordinator runs one coordinator (run two or three: one leads). With
// --http it also serves the dashboard at / and its metrics at /metrics.
func runCoordinator(ctx context.Context, args []string) error {
	fs := newFlags("coordinator", coordUsage)
	var cf connFlags
	cf.register(fs)
	cfg := coordinator.DefaultConfig()
	fs.StringVar(&cfg.ID, "id", "", "instance id (default: coord-<host>-<random>)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "leader lease TTL (longer than a JetStream failover)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "the nodes' heartbeat interval")
	fs.DurationVar(&cfg.UnhealthyAlertAfter, "unhealthy-alert-after", coordinator.DefaultUnhealthyAlertAfter,
		"a node that answers but stays unhealthy this long raises health_check_failed")
	httpAddr := fs.String("http", "", "serve the dashboard at / and Prometheus metrics at /metrics on HOST:PORT (e.g. 127.0.0.1:8080)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	var af alertFlags
	af.register(fs)
	pos, err := parse(fs, args, coordUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, coordUsage)
	}
	if cfg.UnhealthyAlertAfter <= 0 {
		return usageErr("--unhealthy-alert-after must be positive, got %s", cfg.UnhealthyAlertAfter)
	}
	if err := af.apply(&cfg); err != nil {
		return err
	}
	lg, err := logger(*level)
	if err != nil {
		return err
	}
	cfg.NATS, cfg.Version, cfg.Logger = cf.options(""), version, lg
	var ln net.Listener
	if *httpAddr != "" {
		// Listen before anything starts: a taken or malformed address is
		// an error now, not a log line later.
		if ln, err = listenHTTP(*httpAddr); err != nil {
			return err
		}
		defer ln.Close()
		reg := metrics.NewRegistry()
		cfg.Metrics = reg
		co, err := coordinator.New(cfg)
		if err != nil {
			return usageErr("%v", err)
		}
		lg.Info("dashboard", "url", webURL(ln, "/"), "metrics", webURL(ln, "/metrics"))
		return runWithWeb(ctx, ln, reg, cf.options("restartcoord-dashboard"), lg, func(ctx context.Context) error {
			return co.Run(ctx, nil)
		})
	}
	co, err := coordinator.New(cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	return co.Run(ctx, nil)
}

// listenHTTP checks an --http address (HOST:PORT, HOST an IP address or a
// name, PORT 0..65535, 0 picking a free one) and listens on it.
func listenHTTP(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageErr("--http %q: want HOST:PORT, e.g. 127.0.0.1:8080 or :8080 (%v)", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return nil, usageErr("--http %q: the port must be a number 0..65535", addr)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return nil, usageErr("--http %q: %q is neither an IP address nor a host name", addr, host)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	return ln, nil
}

// validHostname: letters, digits, '-' and '.', labels of 1..63, at most 253.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) < 1 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// webURL is the address a person opens for path on ln (an unspecified
// host shown as 127.0.0.1).
func webURL(ln net.Listener, path string) string {
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path
}

// runWithWeb runs main, and beside it the HTTP server on ln (/metrics from
// reg, the dashboard at /) and the dashboard's own NATS client, until ctx
// ends or main returns; then it stops the other two and waits for them.
// The dashboard connects as its own client (its own user where roles
// exist), trying again until NATS answers: until then / says so with a
// 503, while /metrics already works.
func runWithWeb(ctx context.Context, ln net.Listener, reg *prometheus.Registry, nats bus.ConnOptions, lg *slog.Logger, main func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var dash atomic.Pointer[http.Handler]
	mux := webMux(reg, &dash)
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		defer cancel()
		errc <- main(ctx)
	}()
	go func() {
		defer wg.Done()
		if err := serveHTTP(ctx, ln, mux); err != nil {
			errc <- fmt.Errorf("http: %w", err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := runDashboard(ctx, nats, lg, func(h http.Handler) { dash.Store(&h) }); err != nil {
			errc <- fmt.Errorf("dashboard: %w", err)
			cancel()
		}
	}()
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		if err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// webMux serves /metrics from reg and everything else from the dashboard
// once it is connected (until then, a 503 that says so).
func webMux(reg *prometheus.Registry, dash *atomic.Pointer[http.Handler]) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if h := dash.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "the dashboard is connecting to NATS; try again in a moment", http.StatusServiceUnavailable)
	})
	return mux
}

// serveHTTP serves h on ln until ctx ends, then gives open requests 5 s.
// The dashboard's event streams end by themselves when its Run returns.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

// runDashboard connects to NATS (again every 2 s while it cannot), hands
// the dashboard's handler to publish, and runs it until ctx ends.
func runDashboard(ctx context.Context, opts bus.ConnOptions, lg *slog.Logger, publish func(http.Handler)) error {
	var conn *bus.Conn
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := bus.Connect(cctx, opts)
		cancel()
		if err == nil {
			conn = c
			break
		}
		lg.Warn("dashboard: NATS not reachable yet", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	defer conn.Close()
	cfg := dashboard.DefaultConfig()
	cfg.Logger = lg
	d, err := dashboard.New(conn, cfg)
	if err != nil {
		return err
	}
	publish(d.Handler())
	return d.Run(ctx)
}

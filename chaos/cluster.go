package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// Config is the cluster a process-mode run starts on this machine.
type Config struct {
	// Binary is the restartcoord binary every process runs.
	Binary string
	// Dir holds the servers' stores and every process's log.
	Dir string
	// Nodes and Coordinators to start (5 and 2).
	Nodes, Coordinators int
	// Heartbeat of the nodes, also given to the coordinators (250 ms).
	Heartbeat time.Duration
	// LeaseTTL of the coordinator leader (6 s).
	LeaseTTL time.Duration
	// Logf receives the harness's progress.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 5
	}
	if c.Coordinators == 0 {
		c.Coordinators = 2
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 250 * time.Millisecond
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 6 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// server is one NATS server process and its ports.
type server struct {
	name                   string
	client, route, monitor int
	proc                   *proc
}

// routeProxy carries the route that server from dials to server to.
type routeProxy struct {
	from, to int
	*Proxy
}

// Cluster is a 3-server NATS cluster, coordinators and nodes started as real
// processes of the restartcoord binary. Every connection to a server goes
// through a proxy owned by the connecting process (and every route through
// one per direction), so the harness can cut one process, or one server,
// off the network. The servers advertise no addresses to clients
// (no_advertise), so a client cannot route around a proxy.
type Cluster struct {
	cfg     Config
	servers []*server
	routes  []*routeProxy
	// proxies[owner][i] carries owner's connection to server i.
	proxies map[string][]*Proxy
	nodes   []string
	procs   map[string]*proc // nodes and coordinators by name
	// The harness's own connections, one straight to each server (no
	// proxy); it uses one whose server no fault touches.
	obsConns []*bus.Conn
	stores   []*bus.Store
	down     []atomic.Bool // servers under a fault now
	abrupt   abrupt        // worker pids that ended without a graceful stop

	termMu sync.Mutex
	terms  []termSeen // leader terms the harness saw, in order
	exits  []string   // processes that exited on their own (restarted, as systemd would)
}

// Exits lists the processes that exited on their own during the run, and
// how; the harness restarted each after a second, as systemd would.
func (c *Cluster) Exits() []string {
	c.termMu.Lock()
	defer c.termMu.Unlock()
	return slices.Clone(c.exits)
}

func (c *Cluster) noteExit(name string, err error) {
	c.termMu.Lock()
	defer c.termMu.Unlock()
	c.exits = append(c.exits, fmt.Sprintf("%s %s: %v", time.Now().Format(time.TimeOnly), name, err))
}

// termSeen is a leader term the harness saw, and when.
type termSeen struct {
	At     time.Time
	Term   uint64
	Leader string
}

func (c *Cluster) noteTerm(term uint64, leader string) {
	if term == 0 {
		return // answered by a follower
	}
	c.termMu.Lock()
	defer c.termMu.Unlock()
	for _, t := range c.terms {
		if t.Term >= term {
			return
		}
	}
	c.terms = append(c.terms, termSeen{At: time.Now(), Term: term, Leader: leader})
}

// StartCluster starts the servers, runs init (R3), then the coordinators and
// the nodes, and waits until every node is healthy.
func StartCluster(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg.defaults()
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, proxies: map[string][]*Proxy{}, procs: map[string]*proc{}}
	if err := c.startServers(); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.connectObserver(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	initArgs := []string{"init", "--replicas", "3", "--wait", "30s", "--server", c.directURLs()}
	if out, err := runOnce(ctx, cfg.Binary, initArgs...); err != nil {
		c.Stop()
		return nil, fmt.Errorf("chaos: init: %v: %s", err, out)
	}
	for i := range cfg.Coordinators {
		name := fmt.Sprintf("coord-%d", i+1)
		if err := c.startService(name, "coordinator", "--id", name, "--heartbeat", cfg.Heartbeat.String(),
			"--lease-ttl", cfg.LeaseTTL.String()); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for i := range cfg.Nodes {
		name := fmt.Sprintf("node-%d", i+1)
		c.nodes = append(c.nodes, name)
		if err := c.startService(name, "node", "--id", name, "--priority", fmt.Sprint(i+1),
			"--heartbeat", cfg.Heartbeat.String(), "--log-dir", filepath.Join(cfg.Dir, "logs", name)); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.waitLeader(ctx, 30*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func runOnce(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (c *Cluster) startServers() error {
	for i := range 3 {
		s := &server{name: fmt.Sprintf("nats-%d", i+1)}
		for _, p := range []*int{&s.client, &s.route, &s.monitor} {
			port, err := bus.FreePort()
			if err != nil {
				return err
			}
			*p = port
		}
		c.servers = append(c.servers, s)
	}
	// One proxy per route direction: server i dials server j through it.
	for i := range c.servers {
		for j, to := range c.servers {
			if i == j {
				continue
			}
			p, err := NewProxy(fmt.Sprintf("route %s->%s", c.servers[i].name, to.name), "127.0.0.1:0", addr(to.route))
			if err != nil {
				return err
			}
			c.routes = append(c.routes, &routeProxy{from: i, to: j, Proxy: p})
		}
	}
	for i, s := range c.servers {
		conf := filepath.Join(c.cfg.Dir, s.name+".conf")
		if err := os.WriteFile(conf, []byte(c.serverConf(i)), 0o644); err != nil {
			return err
		}
		s.proc = newProc(s.name, c.cfg.Binary, filepath.Join(c.cfg.Dir, "logs"), nil, "nats", "--config", conf)
		if err := s.proc.start(); err != nil {
			return err
		}
	}
	for _, s := range c.servers {
		if err := waitHTTP(s.monitor, serverReadyWithin); err != nil {
			return fmt.Errorf("chaos: %s: %w", s.name, err)
		}
	}
	return nil
}

// serverConf is server i's configuration: its routes go through the route
// proxies, it advertises nothing to clients, and a black-holed peer is
// noticed within 3 s (ping 1 s x 3). Servers gossip their route address to
// each other and dial what they learn (implicit routes), which would go
// around the proxies: each advertises an address where nothing listens, so
// those dials fail and the configured, proxied routes are the only ones.
func (c *Cluster) serverConf(i int) string {
	s := c.servers[i]
	var routes []string
	for _, r := range c.routes {
		if r.from == i {
			routes = append(routes, "nats-route://"+r.Addr())
		}
	}
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 8MB
ping_interval: "1s"
ping_max: 3
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  no_advertise: true
  advertise: "127.0.0.254:9"
  routes: [%s]
}
`, s.name, s.client, s.monitor, filepath.Join(c.cfg.Dir, s.name), s.route, strings.Join(routes, ", "))
}

// ownerURLs creates (once) owner's proxies to every server and returns their URLs.
func (c *Cluster) ownerURLs(owner string) (string, error) {
	ps, ok := c.proxies[owner]
	if !ok {
		for _, s := range c.servers {
			p, err := NewProxy(owner+"->"+s.name, "127.0.0.1:0", addr(s.client))
			if err != nil {
				return "", err
			}
			ps = append(ps, p)
		}
		c.proxies[owner] = ps
	}
	urls := make([]string, len(ps))
	for i, p := range ps {
		urls[i] = "nats://" + p.Addr()
	}
	return strings.Join(urls, ","), nil
}

// URLs is a connection string for owner through its own proxies.
func (c *Cluster) URLs(owner string) (string, error) { return c.ownerURLs(owner) }

func (c *Cluster) directURLs() string {
	urls := make([]string, len(c.servers))
	for i, s := range c.servers {
		urls[i] = "nats://" + addr(s.client)
	}
	return strings.Join(urls, ",")
}

func (c *Cluster) startService(name string, args ...string) error {
	urls, err := c.ownerURLs(name)
	if err != nil {
		return err
	}
	args = append(args, "--server", urls)
	p := newProc(name, c.cfg.Binary, filepath.Join(c.cfg.Dir, "logs"), nil, args...)
	p.restartAfter, p.onExit = time.Second, c.noteExit
	c.procs[name] = p
	return p.start()
}

func (c *Cluster) connectObserver(ctx context.Context) error {
	c.down = make([]atomic.Bool, len(c.servers))
	for _, s := range c.servers {
		cctx, cancel := context.WithTimeout(ctx, serverReadyWithin)
		conn, err := bus.Connect(cctx, bus.ConnOptions{URL: "nats://" + addr(s.client), Name: "chaos-observer"})
		cancel()
		if err != nil {
			return fmt.Errorf("chaos: observer to %s: %w", s.name, err)
		}
		st, err := bus.NewStore(conn)
		if err != nil {
			conn.Close()
			return err
		}
		c.obsConns, c.stores = append(c.obsConns, conn), append(c.stores, st)
	}
	return nil
}

// live is the index of a server no fault touches, whose observer
// connection is up.
func (c *Cluster) live() int {
	for i, conn := range c.obsConns {
		if !c.down[i].Load() && conn.IsConnected() {
			return i
		}
	}
	return 0
}

func (c *Cluster) obs() *bus.Conn { return c.obsConns[c.live()] }

func (c *Cluster) js() jetstream.JetStream { return c.stores[c.live()].JetStream() }

// Nodes lists the node ids.
func (c *Cluster) Nodes() []string { return c.nodes }

// Observer is the harness's own connection to a server no fault touches now.
func (c *Cluster) Observer() *bus.Conn { return c.obs() }

// Health asks a node for its health, with a short timeout.
func (c *Cluster) Health(ctx context.Context, nodeID string) (schema.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var h schema.Health
	err := c.obs().RequestJSON(ctx, schema.NodeSubject(nodeID, schema.OpHealth), map[string]any{}, nil, &h)
	return h, err
}

// Unhealthy lists the nodes that do not answer healthy now, and why.
func (c *Cluster) Unhealthy(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, id := range c.nodes {
		h, err := c.Health(ctx, id)
		if why := healthWhy(h, err); why != "" {
			out[id] = why
		} else if h.Phase != schema.PhaseIdle {
			out[id] = "phase " + string(h.Phase)
		}
	}
	return out
}

// WaitHealthy waits until every node answers healthy and idle.
func (c *Cluster) WaitHealthy(ctx context.Context, within time.Duration) error {
	var bad map[string]string
	if !poll(ctx, within, func() bool { bad = c.Unhealthy(ctx); return len(bad) == 0 }) {
		return fmt.Errorf("chaos: nodes not healthy within %s: %v", within, bad)
	}
	return nil
}

// poll checks cond every 100 ms until it holds (true) or within has passed
// or ctx ends (false). It checks at least once.
func poll(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ClusterHealth asks the coordinators for the cluster's health.
func (c *Cluster) ClusterHealth(ctx context.Context) (schema.ClusterHealth, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var h schema.ClusterHealth
	err := c.obs().RequestJSON(ctx, schema.ClusterSubject(schema.OpClusterHealth), map[string]any{}, nil, &h)
	return h, err
}

func (c *Cluster) waitLeader(ctx context.Context, within time.Duration) error {
	var err error
	if !poll(ctx, within, func() bool {
		var h schema.ClusterHealth
		h, err = c.ClusterHealth(ctx)
		if err == nil && h.Leader != "" {
			c.noteTerm(h.Term, h.Leader)
			return true
		}
		return false
	}) {
		return fmt.Errorf("chaos: no coordinator leads within %s: %v", within, err)
	}
	return nil
}

// WorkerPID is the pid of node's worker process, read from /proc (it works
// while the node is stopped or cut off): the child of its supervisor.
func (c *Cluster) WorkerPID(nodeID string) int {
	p := c.procs[nodeID]
	if p == nil {
		return 0
	}
	kids := children(p.pid())
	if len(kids) == 0 {
		return 0
	}
	return kids[0]
}

// Stop stops every process (SIGTERM, then SIGKILL) and every proxy, and
// closes the observer.
func (c *Cluster) Stop() {
	for _, p := range c.procs {
		p.stop(10 * time.Second)
	}
	for _, conn := range c.obsConns {
		conn.Close()
	}
	for _, s := range c.servers {
		if s.proc != nil {
			s.proc.stop(10 * time.Second)
		}
	}
	for _, ps := range c.proxies {
		for _, p := range ps {
			p.Close()
		}
	}
	for _, r := range c.routes {
		r.Close()
	}
}

// Logs lists every process's log file: each process's output, then the
// workers' logs, which each node writes under logs/<node>/.
func (c *Cluster) Logs() []string {
	m, _ := filepath.Glob(filepath.Join(c.cfg.Dir, "logs", "*.log"))
	w, _ := filepath.Glob(filepath.Join(c.cfg.Dir, "logs", "*", "*.log"))
	return append(m, w...)
}

// serverReadyWithin bounds the wait for a started NATS server to answer
// /healthz. A server is ready in a second on an idle machine, but a run
// here once failed before its first fault on 16 s (the bound was 15 s)
// while the machine was loaded: the harness is as patient as the rest of
// the run (a fault's recovery, the nodes' start-up, 60 s).
const serverReadyWithin = 60 * time.Second

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func waitHTTP(port int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(fmt.Sprintf("http://%s/healthz", addr(port)))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("not ready (GET /healthz)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routes reads a server's route count from its monitoring port (straight,
// not through a proxy): how the harness checks that a partition took.
func (c *Cluster) routeCount(i int) (int, error) {
	resp, err := http.Get(fmt.Sprintf("http://%s/routez", addr(c.servers[i].monitor)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var rz struct {
		NumRoutes int `json:"num_routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rz); err != nil {
		return 0, err
	}
	return rz.NumRoutes, nil
}

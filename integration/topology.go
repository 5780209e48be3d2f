//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Image is the image every container of the topology runs. TestMain builds
// it (or takes $RESTARTCOORD_IMAGE as it is).
var Image = "restartcoord:dev"

// The topology of deploy/compose.yaml.
var (
	NATSServers  = []string{"nats-1", "nats-2", "nats-3"}
	Coordinators = []string{"coordinator-1", "coordinator-2"}
	Nodes        = []string{"node-1", "node-2", "node-3", "node-4", "node-5"}
)

const (
	natsClientPort = "4222/tcp"
	natsHTTPPort   = "8222/tcp"
	natsConfig     = "/etc/restartcoord/nats/cluster.conf"

	// maxLogDump bounds how much of each container's log a failed test prints
	// (the tail is kept).
	maxLogDump = 512 << 10
)

// Cluster is the compose topology as code: 3 NATS servers (JetStream, R3),
// the one-shot init, 2 coordinators and 5 nodes on a private network. The
// host reaches NATS through the servers' published 4222 ports.
type Cluster struct {
	t      testing.TB
	prefix string // container names: <prefix><service>
	net    *testcontainers.DockerNetwork
	docker *testcontainers.DockerClient

	mu    sync.Mutex
	ctrs  map[string]*testcontainers.DockerContainer
	order []string // services in start order (log dumps, cleanup)

	// NodesStartedAt is when the node containers were started.
	NodesStartedAt time.Time
}

// startCluster starts the whole topology and returns once NATS is healthy,
// init has exited 0 and the coordinators and nodes are started (not yet
// joined: the tests wait for that). The cleanup it registers dumps every
// container's log when the test failed, then terminates every container and
// removes the network, whatever happened.
func startCluster(t testing.TB, ctx context.Context) *Cluster {
	t.Helper()
	c := &Cluster{t: t, prefix: "rcit-" + randomID() + "-", ctrs: map[string]*testcontainers.DockerContainer{}}
	t.Cleanup(c.cleanup)

	var err error
	if c.docker, err = testcontainers.NewDockerClientWithOpts(ctx); err != nil {
		t.Fatalf("docker client: %v", err)
	}
	if c.net, err = network.New(ctx); err != nil {
		t.Fatalf("creating the network: %v", err)
	}
	t.Logf("cluster %s: network %s, image %s", strings.TrimSuffix(c.prefix, "-"), c.net.Name, Image)

	// The three servers together: a server's /healthz only turns 200 once
	// JetStream has a meta leader, which needs a quorum of the servers.
	start := time.Now()
	c.parallel(ctx, NATSServers, func(name string) []testcontainers.ContainerCustomizer {
		return []testcontainers.ContainerCustomizer{
			testcontainers.WithCmd("nats", "--config", natsConfig),
			testcontainers.WithEnv(map[string]string{"NATS_NAME": name}),
			testcontainers.WithExposedPorts(natsClientPort, natsHTTPPort),
			network.WithNetwork([]string{name}, c.net),
			// No wait.ForListeningPort: its check execs a shell in the
			// container, and the image has none.
			testcontainers.WithWaitStrategyAndDeadline(90*time.Second,
				wait.ForHTTP("/healthz").WithPort(natsHTTPPort).
					WithStartupTimeout(90*time.Second).WithPollInterval(250*time.Millisecond)),
		}
	})
	t.Logf("NATS servers healthy in %s: %s", time.Since(start).Round(time.Millisecond), c.NATSURL())

	// init: creates the R3 streams, buckets and object store, then exits.
	start = time.Now()
	c.parallel(ctx, []string{"init"}, func(string) []testcontainers.ContainerCustomizer {
		return []testcontainers.ContainerCustomizer{
			testcontainers.WithCmd("init", "--replicas", "3", "--wait", "60s"),
			network.WithNetwork(nil, c.net),
			testcontainers.WithWaitStrategyAndDeadline(90*time.Second, wait.ForExit().WithExitTimeout(90*time.Second)),
		}
	})
	st, err := c.Container("init").State(ctx)
	if err != nil {
		t.Fatalf("init: state: %v", err)
	}
	if st.Running || st.ExitCode != 0 {
		t.Fatalf("init: running=%v exit code %d, want exited 0; log:\n%s", st.Running, st.ExitCode, c.Logs(ctx, "init"))
	}
	if log := c.Logs(ctx, "init"); !strings.Contains(log, "initialised") {
		t.Fatalf("init exited 0 without printing \"initialised\"; log:\n%s", log)
	}
	t.Logf("init exited 0 in %s", time.Since(start).Round(time.Millisecond))

	// Coordinators and nodes: no readiness check here (the image has no
	// shell and they publish no port); the tests wait for them to join.
	c.NodesStartedAt = time.Now()
	services := append(append([]string{}, Coordinators...), Nodes...)
	c.parallel(ctx, services, func(name string) []testcontainers.ContainerCustomizer {
		// As deploy/compose.yaml runs them: the dashboard and /metrics on
		// the coordinators, /metrics on the nodes.
		cmd := []string{"coordinator", "--id", name, "--http", ":8080"}
		if strings.HasPrefix(name, "node-") {
			cmd = []string{"node", "--id", name, "--priority", strings.TrimPrefix(name, "node-"), "--metrics-addr", ":9100"}
		}
		return []testcontainers.ContainerCustomizer{
			testcontainers.WithCmd(cmd...),
			network.WithNetwork(nil, c.net),
		}
	})
	t.Logf("coordinators and nodes started in %s", time.Since(c.NodesStartedAt).Round(time.Millisecond))
	return c
}

// parallel starts one container per name at once and waits for all of them;
// it fails the test if any does not start (or is not ready).
func (c *Cluster) parallel(ctx context.Context, names []string, opts func(name string) []testcontainers.ContainerCustomizer) {
	c.t.Helper()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			all := append([]testcontainers.ContainerCustomizer{
				testcontainers.WithLogger(tclog.TestLogger(c.t)),
				testcontainers.WithName(c.prefix + name),
			}, opts(name)...)
			ctr, err := testcontainers.Run(ctx, Image, all...)
			if ctr != nil { // also on error: cleanup must remove it
				c.mu.Lock()
				c.ctrs[name] = ctr
				c.order = append(c.order, name)
				c.mu.Unlock()
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, err.Error())
			if c.Container(names[i]) != nil {
				failed = append(failed, "log of "+names[i]+":\n"+c.Logs(ctx, names[i]))
			}
		}
	}
	if len(failed) > 0 {
		c.t.Fatalf("starting containers:\n%s", strings.Join(failed, "\n"))
	}
}

// Container returns the container of a service (nats-1, init,
// coordinator-2, node-5...), nil if it has none.
func (c *Cluster) Container(name string) *testcontainers.DockerContainer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctrs[name]
}

// Running reports whether the service's container runs.
func (c *Cluster) Running(ctx context.Context, name string) bool {
	ctr := c.Container(name)
	if ctr == nil {
		return false
	}
	st, err := ctr.State(ctx)
	return err == nil && st.Running
}

// ServerURL is the host-side URL of one NATS server ("" when it is down).
func (c *Cluster) ServerURL(ctx context.Context, name string) string {
	ctr := c.Container(name)
	if ctr == nil || !c.Running(ctx, name) {
		return ""
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return ""
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	port, err := ctr.MappedPort(ctx, natsClientPort)
	if err != nil {
		return ""
	}
	return "nats://" + net.JoinHostPort(host, port.Port())
}

// NATSURL is the comma-separated host-side URLs of the running NATS servers
// (published ports can change when a server's container is restarted, so
// ask again after one).
func (c *Cluster) NATSURL() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var urls []string
	for _, name := range NATSServers {
		if u := c.ServerURL(ctx, name); u != "" {
			urls = append(urls, u)
		}
	}
	return strings.Join(urls, ",")
}

// Kill sends SIGKILL to the service's container (docker kill) and waits until
// it has stopped. For a node, the supervisor is PID 1 of the container: its
// worker dies with it.
func (c *Cluster) Kill(ctx context.Context, name string) error {
	ctr := c.Container(name)
	if ctr == nil {
		return fmt.Errorf("no container for service %q", name)
	}
	if _, err := c.docker.ContainerKill(ctx, ctr.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("docker kill %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for c.Running(ctx, name) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still running 30s after docker kill", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Start starts the service's stopped container again (the same container,
// with its file system) and waits for its readiness check (NATS: /healthz).
func (c *Cluster) Start(ctx context.Context, name string) error {
	ctr := c.Container(name)
	if ctr == nil {
		return fmt.Errorf("no container for service %q", name)
	}
	if err := ctr.Start(ctx); err != nil {
		return fmt.Errorf("starting %s again: %w\nlog:\n%s", name, err, c.Logs(ctx, name))
	}
	return nil
}

// Logs returns the service's container log (stdout and stderr), or a note
// saying why it could not be read.
func (c *Cluster) Logs(ctx context.Context, name string) string {
	ctr := c.Container(name)
	if ctr == nil {
		return "(no container)"
	}
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(reading the log: %v)", err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, rc); err != nil {
		fmt.Fprintf(&b, "\n(reading the log: %v)", err)
	}
	return b.String()
}

// cleanup dumps every container's log if the test failed (or
// $INTEGRATION_LOGS is set), then terminates every container and removes the
// network.
func (c *Cluster) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.mu.Lock()
	order := append([]string{}, c.order...)
	c.mu.Unlock()
	if c.t.Failed() || os.Getenv("INTEGRATION_LOGS") != "" {
		for _, name := range order {
			log := c.Logs(ctx, name)
			if len(log) > maxLogDump {
				log = fmt.Sprintf("(first %d bytes left out)\n", len(log)-maxLogDump) + log[len(log)-maxLogDump:]
			}
			c.t.Logf("==================== log of %s (%s%s) ====================\n%s", name, c.prefix, name, log)
		}
	}
	var wg sync.WaitGroup
	for _, name := range order {
		ctr := c.Container(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := testcontainers.TerminateContainer(ctr, testcontainers.StopContext(ctx), testcontainers.StopTimeout(2*time.Second)); err != nil {
				c.t.Errorf("terminating %s: %v", name, err)
			}
		}()
	}
	wg.Wait()
	if c.net != nil {
		if err := c.net.Remove(ctx); err != nil {
			c.t.Errorf("removing network %s: %v", c.net.Name, err)
		}
	}
	if c.docker != nil {
		_ = c.docker.Close()
	}
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

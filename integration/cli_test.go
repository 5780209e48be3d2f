//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// result is what a command run from the host did.
type result struct {
	args   []string
	stdout []byte
	stderr []byte
	code   int // exit code; -1 when it did not run (or was killed)
	err    error
}

func (r result) String() string {
	return fmt.Sprintf("`%s`: exit %d (%v)\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.err,
		bytes.TrimSpace(r.stdout), bytes.TrimSpace(r.stderr))
}

// ok is nil when the command exited 0, else an error describing the run.
func (r result) ok() error {
	if r.code == 0 && r.err == nil {
		return nil
	}
	return fmt.Errorf("%s", r)
}

func runCmd(ctx context.Context, timeout time.Duration, bin string, args ...string) result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "NATS_URL=") // only the URLs given
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{args: append([]string{bin}, args...), stdout: stdout.Bytes(), stderr: stderr.Bytes(), code: errExit(err), err: err}
}

// RC runs the host restartcoord binary against the cluster (its running NATS
// servers' published ports).
func (c *Cluster) RC(ctx context.Context, timeout time.Duration, args ...string) result {
	return c.RCAt(ctx, c.NATSURL(), timeout, args...)
}

// RCAt runs the host restartcoord binary against the given server URL(s).
func (c *Cluster) RCAt(ctx context.Context, url string, timeout time.Duration, args ...string) result {
	return runCmd(ctx, timeout, rcBin, append(args, "-s", url)...)
}

// NatsCLI runs the stock nats CLI against the given server URL(s).
func NatsCLI(ctx context.Context, url string, timeout time.Duration, args ...string) result {
	return runCmd(ctx, timeout, natsBin, append([]string{"--server", url}, args...)...)
}

// requireNatsCLI skips (fails in CI) when the stock nats CLI is missing.
func requireNatsCLI(t *testing.T) {
	t.Helper()
	if natsBin != "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the nats CLI is missing in CI: run `make tools` first")
	}
	t.Skip("nats CLI not found: run `make tools` (installs natscli v0.5.0 into ./bin)")
}

// decodeOut decodes a command's JSON output.
func decodeOut[T any](r result) (T, error) {
	var v T
	if err := r.ok(); err != nil {
		return v, err
	}
	if err := json.Unmarshal(r.stdout, &v); err != nil {
		return v, fmt.Errorf("decoding the output of %s: %v", r, err)
	}
	return v, nil
}

// eventually polls cond until it returns nil, failing the test with cond's
// last error after timeout. It returns how long it took. While it waits it
// logs each new reason cond gives (at most maxReasons of them, with when),
// so a failure shows how the wait went, not only how it ended.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	const maxReasons = 8
	start := time.Now()
	deadline := start.Add(timeout)
	last, logged := "", 0
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		if msg := err.Error(); msg != last && logged < maxReasons {
			t.Logf("%s: at %s: %s", what, time.Since(start).Round(time.Millisecond), oneLine(msg, 400))
			last = msg
			logged++
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// oneLine is s with its lines joined by " | ", cut to at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
	if len(s) > n {
		s = s[:n] + " ..."
	}
	return s
}

// --- restartcoord verbs --------------------------------------------------------------

func (c *Cluster) nodesAt(ctx context.Context, url string) (schema.NodeList, error) {
	return decodeOut[schema.NodeList](c.RCAt(ctx, url, 20*time.Second, "nodes", "--json", "--timeout", "10s"))
}

func (c *Cluster) healthAt(ctx context.Context, url, node string) (schema.Health, error) {
	return decodeOut[schema.Health](c.RCAt(ctx, url, 20*time.Second, "health", node, "--json", "--timeout", "10s"))
}

// byID indexes a node list.
func byID(l schema.NodeList) map[string]schema.ClusterNode {
	m := map[string]schema.ClusterNode{}
	for _, n := range l.Nodes {
		m[n.NodeID] = n
	}
	return m
}

// allHealthy is nil when the list holds node-1..5, each healthy and
// answering, and no other node.
func allHealthy(l schema.NodeList) error {
	m := byID(l)
	var bad []string
	for _, id := range Nodes {
		n, ok := m[id]
		switch {
		case !ok:
			bad = append(bad, id+" missing")
		case !n.Healthy || !n.Answering || n.Failed || n.Quarantined:
			bad = append(bad, fmt.Sprintf("%s healthy=%v answering=%v failed=%v quarantined=%v phase=%s",
				id, n.Healthy, n.Answering, n.Failed, n.Quarantined, n.Phase))
		}
	}
	if len(m) != len(Nodes) {
		bad = append(bad, fmt.Sprintf("%d nodes listed, want %d", len(m), len(Nodes)))
	}
	if len(bad) > 0 {
		return fmt.Errorf("nodes: %s", strings.Join(bad, "; "))
	}
	return nil
}

// waitAllHealthy waits until `restartcoord nodes` shows node-1..5 healthy
// and each answers its health request healthy.
func (c *Cluster) waitAllHealthy(t *testing.T, ctx context.Context, timeout time.Duration) {
	t.Helper()
	took := eventually(t, timeout, "all nodes healthy", func() error { return c.allHealthyAt(ctx, c.NATSURL()) })
	t.Logf("all nodes healthy (waited %s)", took.Round(time.Millisecond))
}

// allHealthyAt is nil when, through url, `nodes` lists node-1..5 healthy
// and each answers its health request healthy.
func (c *Cluster) allHealthyAt(ctx context.Context, url string) error {
	l, err := c.nodesAt(ctx, url)
	if err != nil {
		return err
	}
	if err := allHealthy(l); err != nil {
		return err
	}
	for _, id := range Nodes {
		h, err := c.healthAt(ctx, url, id)
		if err != nil {
			return err
		}
		if !h.Healthy {
			return fmt.Errorf("%s answers unhealthy: %+v", id, h)
		}
	}
	return nil
}

// taskGet reads one task from its node.
func (c *Cluster) taskGet(ctx context.Context, url, node, client, id string) (schema.Task, error) {
	return decodeOut[schema.Task](c.RCAt(ctx, url, 40*time.Second, "task", "get", node, id, "--client", client, "--json"))
}

// taskList reads a node's tasks (all of them: fewer than 1000 here).
func (c *Cluster) taskList(ctx context.Context, url, node, client string) (schema.TaskList, error) {
	return decodeOut[schema.TaskList](c.RCAt(ctx, url, 40*time.Second, "task", "list", node, "--limit", "1000", "--client", client, "--json"))
}

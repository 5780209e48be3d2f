package chaos

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// Fault is one thing that goes wrong: Inject makes it happen, Heal undoes it
// (restarts what was killed, continues what was stopped, reconnects what was
// cut off). Heal is called once after Inject, after the fault's hold time.
type Fault interface {
	Kind() string   // e.g. "kill-worker"
	Target() string // e.g. "node-3"
	Inject(ctx context.Context) error
	Heal(ctx context.Context) error
}

// Faults lists the fault kinds a process-mode run draws from.
var Faults = []string{
	"kill-worker", "kill-node", "stop-worker", "stop-node",
	"partition-node", "partition-nats", "kill-nats", "kill-leader",
}

// abrupt records the worker processes that ended without a graceful stop
// (killed by the harness, or by their watchdog after the harness stopped
// them): a job step they ran may run again after them, by design.
type abrupt struct {
	mu   sync.Mutex
	pids map[int]string
}

func (a *abrupt) add(pid int, why string) {
	if pid == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pids == nil {
		a.pids = map[int]string{}
	}
	a.pids[pid] = why
}

func (a *abrupt) has(pid int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.pids[pid]
	return ok
}

// NewFault builds a fault of kind on target (a node id, a server index as
// "nats-N", or "" for the leader).
func (c *Cluster) NewFault(kind, target string) (Fault, error) {
	switch kind {
	case "kill-worker", "kill-node", "stop-worker", "stop-node", "partition-node":
		if c.procs[target] == nil {
			return nil, fmt.Errorf("chaos: %s: no node %q", kind, target)
		}
	case "partition-nats", "kill-nats":
		if c.serverIndex(target) < 0 {
			return nil, fmt.Errorf("chaos: %s: no server %q", kind, target)
		}
	case "kill-leader":
	default:
		return nil, fmt.Errorf("chaos: unknown fault kind %q", kind)
	}
	return &procFault{c: c, kind: kind, target: target}, nil
}

func (c *Cluster) serverIndex(name string) int {
	for i, s := range c.servers {
		if s.name == name {
			return i
		}
	}
	return -1
}

// Servers lists the NATS servers' names.
func (c *Cluster) Servers() []string {
	out := make([]string, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.name
	}
	return out
}

// procFault is a process-mode fault: signals to real processes, proxies
// black-holed, processes restarted by the harness as systemd would.
type procFault struct {
	c            *Cluster
	kind, target string
	stopped      []int // pids stopped by a stop fault
	leader       string
}

func (f *procFault) Kind() string { return f.kind }
func (f *procFault) Target() string {
	if f.kind == "kill-leader" && f.leader != "" {
		return f.leader
	}
	return f.target
}

func (f *procFault) Inject(ctx context.Context) error {
	c := f.c
	switch f.kind {
	case "kill-worker":
		pid := c.WorkerPID(f.target)
		if pid == 0 {
			return fmt.Errorf("chaos: %s has no worker", f.target)
		}
		c.abrupt.add(pid, "kill-worker")
		return syscall.Kill(pid, syscall.SIGKILL)
	case "kill-node":
		c.abrupt.add(c.WorkerPID(f.target), "kill-node")
		return c.procs[f.target].kill()
	case "stop-worker":
		pid := c.WorkerPID(f.target)
		if pid == 0 {
			return fmt.Errorf("chaos: %s has no worker", f.target)
		}
		c.abrupt.add(pid, "stop-worker (its watchdog may kill it)")
		f.stopped = []int{pid}
		return syscall.Kill(pid, syscall.SIGSTOP)
	case "stop-node":
		sup := c.procs[f.target].pid()
		f.stopped = append([]int{sup}, children(sup)...)
		for _, pid := range f.stopped[1:] {
			c.abrupt.add(pid, "stop-node (its watchdog may kill it)")
		}
		for _, pid := range f.stopped {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
		return nil
	case "partition-node":
		for _, p := range c.proxies[f.target] {
			p.Blackhole()
		}
		return nil
	case "partition-nats":
		c.down[c.serverIndex(f.target)].Store(true)
		for _, p := range c.serverProxies(c.serverIndex(f.target)) {
			p.Blackhole()
		}
		return nil
	case "kill-nats":
		c.down[c.serverIndex(f.target)].Store(true)
		return c.servers[c.serverIndex(f.target)].proc.kill()
	case "kill-leader":
		h, err := c.ourLeader(ctx, leaderWait)
		if err != nil {
			return err
		}
		p := c.procs[h.Leader]
		f.leader = h.Leader
		c.noteTerm(h.Term, h.Leader)
		return p.kill()
	}
	return fmt.Errorf("chaos: unknown fault %q", f.kind)
}

// leaderWait: a kill-leader drawn while no coordinator leads (the last
// fault's election still under way) waits this long for one, as the fault
// is "kill the leader", not "find none" (a 10-minute run drew one 0.8 s
// after a partition healed, and counted it as never recovered).
const leaderWait = 20 * time.Second

// ourLeader returns cluster health once it names a leader of ours.
func (c *Cluster) ourLeader(ctx context.Context, within time.Duration) (schema.ClusterHealth, error) {
	deadline := time.Now().Add(within)
	for {
		h, err := c.ClusterHealth(ctx)
		if err == nil && c.procs[h.Leader] != nil {
			return h, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return h, fmt.Errorf("chaos: who leads: %w", err)
			}
			return h, fmt.Errorf("chaos: leader %q is not one of ours (waited %s)", h.Leader, within)
		}
		sleep(ctx, 250*time.Millisecond)
	}
}

func (f *procFault) Heal(ctx context.Context) error {
	c := f.c
	switch f.kind {
	case "kill-worker":
		return nil // the supervisor restarts it
	case "kill-node":
		return c.procs[f.target].start()
	case "stop-worker", "stop-node":
		for _, pid := range f.stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		return nil
	case "partition-node":
		for _, p := range c.proxies[f.target] {
			p.Heal()
		}
		return nil
	case "partition-nats":
		for _, p := range c.serverProxies(c.serverIndex(f.target)) {
			p.Heal()
		}
		c.down[c.serverIndex(f.target)].Store(false)
		return nil
	case "kill-nats":
		defer c.down[c.serverIndex(f.target)].Store(false)
		return c.servers[c.serverIndex(f.target)].proc.start()
	case "kill-leader":
		return c.procs[f.leader].start()
	}
	return nil
}

// serverProxies are every proxy to or from server i: every process's
// connection to it and its routes in both directions.
func (c *Cluster) serverProxies(i int) []*Proxy {
	var out []*Proxy
	for _, ps := range c.proxies {
		out = append(out, ps[i])
	}
	for _, r := range c.routes {
		if r.from == i || r.to == i {
			out = append(out, r.Proxy)
		}
	}
	return out
}

// Isolated reports whether server i has lost its routes (checked on its own
// monitoring port, not through a proxy): a partition that took.
func (c *Cluster) Isolated(name string, within time.Duration) bool {
	i := c.serverIndex(name)
	return poll(context.Background(), within, func() bool {
		n, err := c.routeCount(i)
		return err == nil && n == 0
	})
}

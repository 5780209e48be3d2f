//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/chaos"
	"github.com/restartcoord/restartcoord/schema"
)

// testContainerFaults makes the chaos suite's container-mode faults
// (chaos.ContainerFault, through the docker CLI) on the running topology:
// a node's worker killed, a node frozen (docker pause) and a node and a NATS
// server cut off their network (docker network disconnect). Each time the
// harness sees the fault take (the node stops answering, or its worker
// changes) and then the node healthy again, with the tasks it held.
func testContainerFaults(t *testing.T, ctx context.Context, c *Cluster) {
	c.waitAllHealthy(t, ctx, 60*time.Second)
	const victim, clientID = "node-4", "it-faults"
	url := c.NATSURL()
	var tasks []schema.Task
	for i := range 3 {
		tk, err := decodeOut[schema.Task](c.RCAt(ctx, url, 40*time.Second, "task", "create", victim,
			"--title", fmt.Sprintf("faults %d", i), "--client", clientID, "--json"))
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, tk)
	}
	ctrName := c.prefix + victim
	health := func() (schema.Health, error) { return c.healthAt(ctx, c.NATSURL(), victim) }
	healthy := func() error {
		h, err := health()
		if err != nil {
			return err
		}
		if !h.Healthy {
			return fmt.Errorf("%s unhealthy, phase %s", victim, h.Phase)
		}
		return nil
	}
	silent := func() error {
		if _, err := c.healthAt(ctx, c.NATSURL(), victim); err == nil {
			return fmt.Errorf("%s still answers", victim)
		}
		return nil
	}
	inject := func(f *chaos.ContainerFault) {
		t.Helper()
		if err := f.Inject(ctx); err != nil {
			t.Fatalf("%s %s: %v", f.Kind(), f.Target(), err)
		}
	}
	heal := func(f *chaos.ContainerFault) {
		t.Helper()
		if err := f.Heal(ctx); err != nil {
			t.Fatalf("heal %s %s: %v", f.Kind(), f.Target(), err)
		}
	}

	// A worker killed: the supervisor starts a new one.
	before, err := health()
	if err != nil {
		t.Fatal(err)
	}
	kw, err := chaos.NewContainerFault("kill-worker", ctrName, "")
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	inject(kw)
	took := eventually(t, 30*time.Second, "a new worker after kill-worker", func() error {
		h, err := health()
		switch {
		case err != nil:
			return err
		case !h.Healthy:
			return fmt.Errorf("unhealthy, phase %s", h.Phase)
		case h.WorkerPID == before.WorkerPID && h.WorkerUptime >= time.Since(killed).Seconds():
			return fmt.Errorf("worker %d is the old one", h.WorkerPID)
		}
		return nil
	})
	t.Logf("kill-worker: healthy with a new worker after %s", took.Round(time.Millisecond))

	// Frozen (the cgroup freezer): it stops answering; thawed, it is back.
	st, _ := chaos.NewContainerFault("stop", ctrName, "")
	inject(st)
	eventually(t, 15*time.Second, victim+" silent while paused", silent)
	heal(st)
	took = eventually(t, 30*time.Second, victim+" healthy after unpause", healthy)
	t.Logf("stop: healthy %s after unpause", took.Round(time.Millisecond))

	// Cut off the network: it stops answering; connected again, it is back.
	pn, _ := chaos.NewContainerFault("partition", ctrName, c.net.Name)
	inject(pn)
	eventually(t, 15*time.Second, victim+" silent while disconnected", silent)
	time.Sleep(3 * time.Second) // long enough for its NATS connection to be declared dead
	heal(pn)
	took = eventually(t, 30*time.Second, victim+" healthy after reconnecting", healthy)
	t.Logf("partition of %s: healthy %s after the network came back", victim, took.Round(time.Millisecond))

	// A NATS server cut off: the nodes stay healthy through the other two.
	ps, _ := chaos.NewContainerFault("partition", c.prefix+"nats-2", c.net.Name, "nats-2")
	inject(ps)
	time.Sleep(5 * time.Second)
	eventually(t, 30*time.Second, "all nodes healthy with nats-2 cut off", func() error {
		l, err := c.nodesAt(ctx, c.NATSURL())
		if err != nil {
			return err
		}
		return allHealthy(l)
	})
	heal(ps)
	// Connected again (its host port may have changed), nats-2 must form its
	// routes again and catch its streams up before a client that lands on it
	// can reach the nodes and the task journal: wait for both through it alone.
	only := c.ServerURL(ctx, "nats-2")
	if only == "" {
		t.Fatal("nats-2 has no published client port after it was connected again")
	}
	js := jetStreamAt(t, ctx, only, "integration-faults")
	took = eventually(t, 90*time.Second, "every stream current after nats-2 came back", func() error { return streamsCurrent(ctx, js) })
	t.Logf("nats-2 back: every stream current %s after the network came back", took.Round(time.Millisecond))
	eventually(t, 60*time.Second, "every node healthy through nats-2 alone", func() error { return c.allHealthyAt(ctx, only) })
	c.waitAllHealthy(t, ctx, 60*time.Second)

	// The tasks it held are all there, unchanged. A read may still meet a
	// stream leader moving: each is tried again, and each failure logged.
	for _, want := range tasks {
		var got schema.Task
		attempts := 0
		eventually(t, 60*time.Second, "task "+want.TaskID+" after the faults", func() error {
			attempts++
			r := c.RCAt(ctx, c.NATSURL(), 40*time.Second, "task", "get", victim, want.TaskID, "--client", clientID, "--json")
			var err error
			if got, err = decodeOut[schema.Task](r); err != nil {
				t.Logf("task get %s, attempt %d: exit %d: %s", want.TaskID, attempts, r.code, bytes.TrimSpace(r.stderr))
			}
			return err
		})
		if !got.Equal(&want) {
			t.Fatalf("task %s changed: %+v, want %+v", want.TaskID, got, want)
		}
	}
}

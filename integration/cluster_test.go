//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// TestCluster starts the compose topology once and runs the scenarios on it
// in order. Each scenario first waits for the five nodes to be healthy and
// leaves the cluster whole (what it kills, it starts again).
func TestCluster(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	c := startCluster(t, ctx)
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))

	t.Run("NodesAutoJoin", func(t *testing.T) { testNodesAutoJoin(t, ctx, c) })
	t.Run("NatsCLI", func(t *testing.T) { testNatsCLI(t, ctx, c) })
	t.Run("Roll", func(t *testing.T) { testRoll(t, ctx, c) })
	t.Run("NodeKillRejoin", func(t *testing.T) { testNodeKillRejoin(t, ctx, c) })
	t.Run("NATSServerKill", func(t *testing.T) { testNATSServerKill(t, ctx, c) })
	t.Run("ContainerFaults", func(t *testing.T) { testContainerFaults(t, ctx, c) })
}

// testNodesAutoJoin: the five nodes, started with nothing but their id and
// priority, register themselves and show healthy in `restartcoord nodes`
// within 30 s of their containers starting, with what they were started
// with; the coordinators elect a leader that counts them.
func testNodesAutoJoin(t *testing.T, ctx context.Context, c *Cluster) {
	wantVersion := ""
	if r := runCmd(ctx, 10*time.Second, rcBin, "version"); r.ok() == nil {
		wantVersion = strings.TrimPrefix(strings.TrimSpace(string(r.stdout)), "restartcoord ")
	}
	deadline := time.Until(c.NodesStartedAt.Add(30 * time.Second))
	var list schema.NodeList
	eventually(t, deadline, "node-1..5 healthy in `restartcoord nodes` within 30s of starting", func() error {
		l, err := c.nodesAt(ctx, c.NATSURL())
		if err != nil {
			return err
		}
		list = l
		return allHealthy(l)
	})
	t.Logf("node-1..5 healthy %s after their containers started", time.Since(c.NodesStartedAt).Round(time.Millisecond))
	m := byID(list)
	for i, id := range Nodes {
		n := m[id]
		if n.Group != "default" || n.Priority != i+1 || n.WorkerPID <= 0 || n.LastHeartbeat == nil {
			t.Errorf("%s: group %q priority %d worker pid %d last heartbeat %v; want group default, priority %d, a worker",
				id, n.Group, n.Priority, n.WorkerPID, n.LastHeartbeat, i+1)
		}
		if wantVersion != "" && imageBuilt && n.Version != wantVersion {
			t.Errorf("%s runs version %q, the binary built for the image is %q", id, n.Version, wantVersion)
		}
	}

	// Each node answers its own health request, through the cluster.
	for _, id := range Nodes {
		h, err := c.healthAt(ctx, c.NATSURL(), id)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type != schema.TypeHealth || !h.Healthy || h.NodeID != id || h.Group != "default" || h.WorkerPID <= 0 {
			t.Errorf("health of %s: %+v", id, h)
		}
	}

	// The coordinators: one leader, counting the five nodes.
	eventually(t, 30*time.Second, "cluster-health: a leader and 5 healthy nodes", func() error {
		ch, err := decodeOut[schema.ClusterHealth](c.RC(ctx, 20*time.Second, "cluster-health", "--json", "--timeout", "10s"))
		if err != nil {
			return err
		}
		if !ch.Healthy || !slices.Contains(Coordinators, ch.Leader) || ch.Term == 0 || ch.NodesTotal != 5 || ch.NodesHealthy != 5 || ch.CircuitBreaker.Open {
			return fmt.Errorf("cluster-health: %+v", ch)
		}
		return nil
	})
}

// testNatsCLI: the stock nats CLI sees the product as the contract says:
// a node answers orch.v1.node.<id>.health, `nats micro ls` lists one
// orch-node instance per node and one orch-coordinator per coordinator, and
// ORCH_JOURNAL (like every stream and bucket of init) is replicated on the
// three servers (R3).
func testNatsCLI(t *testing.T, ctx context.Context, c *Cluster) {
	requireNatsCLI(t)
	c.waitAllHealthy(t, ctx, 60*time.Second)
	url := c.NATSURL()

	r := NatsCLI(ctx, url, 30*time.Second, "req", "--raw", "--timeout", "10s", schema.NodeSubject("node-3", schema.OpHealth), "{}")
	if err := r.ok(); err != nil {
		t.Fatal(err)
	}
	var h schema.Health
	if err := json.Unmarshal(r.stdout, &h); err != nil {
		t.Fatalf("nats req health: %v: %s", err, r.stdout)
	}
	if h.Type != schema.TypeHealth || !h.Healthy || h.NodeID != "node-3" || h.WorkerPID <= 0 || h.Checks.Database == nil {
		t.Errorf("nats req %s: %s", schema.NodeSubject("node-3", schema.OpHealth), r.stdout)
	}

	// nats micro ls --json: one orch-node instance per node, one
	// orch-coordinator per coordinator, each saying whose it is.
	eventually(t, 20*time.Second, "nats micro ls: node-1..5 as orch-node, coordinator-1..2 as orch-coordinator", func() error {
		r := NatsCLI(ctx, url, 30*time.Second, "micro", "ls", "--json")
		if err := r.ok(); err != nil {
			return err
		}
		ids, err := microInstances(r.stdout)
		if err != nil {
			return err
		}
		if !slices.Equal(ids["orch-node"], Nodes) || !slices.Equal(ids["orch-coordinator"], Coordinators) {
			return fmt.Errorf("instances: orch-node %v, orch-coordinator %v; want %v and %v:\n%s",
				ids["orch-node"], ids["orch-coordinator"], Nodes, Coordinators, r.stdout)
		}
		return nil
	})

	// R3: the journal and the rest of the store on the three servers.
	streams := []string{schema.StreamJournal, schema.StreamRequests, schema.StreamEvents, schema.StreamAlerts, schema.StreamAudit,
		"KV_" + schema.BucketNodes, "KV_" + schema.BucketLeases}
	for _, name := range streams {
		eventually(t, 30*time.Second, "nats stream info "+name+": 3 replicas on nats-1..3, all current", func() error {
			r := NatsCLI(ctx, url, 30*time.Second, "stream", "info", name, "--json")
			if err := r.ok(); err != nil {
				return err
			}
			var info struct {
				Config struct {
					Replicas int `json:"num_replicas"`
				} `json:"config"`
				Cluster struct {
					Leader   string `json:"leader"`
					Replicas []struct {
						Name    string `json:"name"`
						Current bool   `json:"current"`
						Offline bool   `json:"offline"`
					} `json:"replicas"`
				} `json:"cluster"`
			}
			if err := json.Unmarshal(r.stdout, &info); err != nil {
				return fmt.Errorf("decoding %s: %v", r.stdout, err)
			}
			peers := []string{info.Cluster.Leader}
			for _, p := range info.Cluster.Replicas {
				if !p.Current || p.Offline {
					return fmt.Errorf("%s: replica %s current=%v offline=%v", name, p.Name, p.Current, p.Offline)
				}
				peers = append(peers, p.Name)
			}
			slices.Sort(peers)
			if info.Config.Replicas != 3 || !slices.Equal(peers, NATSServers) {
				return fmt.Errorf("%s: num_replicas %d, peers (leader + replicas) %v, want 3 on %v", name, info.Config.Replicas, peers, NATSServers)
			}
			return nil
		})
	}
}

// microInstances reads `nats micro ls --json` (a list of service infos):
// per service name, the ids its instances' metadata give (node_id or
// coordinator_id), sorted.
func microInstances(out []byte) (map[string][]string, error) {
	var list []struct {
		Name     string            `json:"name"`
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("decoding nats micro ls --json: %v: %s", err, out)
	}
	ids := map[string][]string{}
	seen := map[string]bool{}
	for _, s := range list {
		if s.ID == "" || seen[s.ID] {
			return nil, fmt.Errorf("nats micro ls --json: instance without an id, or twice: %+v", s)
		}
		seen[s.ID] = true
		id := s.Metadata["node_id"]
		if id == "" {
			id = s.Metadata["coordinator_id"]
		}
		ids[s.Name] = append(ids[s.Name], id)
	}
	for _, l := range ids {
		slices.Sort(l)
	}
	return ids, nil
}

// openNodesBucket connects to url and opens ORCH_NODES; the connection
// closes when the test ends.
func openNodesBucket(t *testing.T, ctx context.Context, url, name string) jetstream.KeyValue {
	t.Helper()
	kv, err := nodesBucket(ctx, jetStreamAt(t, ctx, url, name))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// testRoll: a rolling restart of the group restarts every node's worker
// (new worker PID, node healthy again) and completes, while every node stays
// registered: its supervisor runs on (same instance in ORCH_NODES, never
// deleted) and it never leaves `restartcoord nodes`.
func testRoll(t *testing.T, ctx context.Context, c *Cluster) {
	c.waitAllHealthy(t, ctx, 60*time.Second)
	url := c.NATSURL()
	kv := openNodesBucket(t, ctx, url, "integration-roll")

	before := map[string]schema.Health{}
	reg := map[string]schema.NodeInfo{}
	for _, id := range Nodes {
		h, err := c.healthAt(ctx, url, id)
		if err != nil {
			t.Fatal(err)
		}
		before[id] = h
		reg[id] = registration(t, ctx, kv, id)
	}

	// Watch the registry and the node list while the roll runs.
	wctx, stopWatch := context.WithCancel(ctx)
	w, err := kv.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var deleted, missing []string
	listings := 0
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for e := range w.Updates() {
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				mu.Lock()
				deleted = append(deleted, fmt.Sprintf("%s %s at %s", e.Key(), e.Operation(), e.Created().Format(time.RFC3339Nano)))
				mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for wctx.Err() == nil {
			if l, err := c.nodesAt(wctx, url); err == nil {
				m := byID(l)
				mu.Lock()
				listings++
				for _, id := range Nodes {
					if _, ok := m[id]; !ok {
						missing = append(missing, fmt.Sprintf("%s at %s", id, time.Now().Format(time.RFC3339Nano)))
					}
				}
				mu.Unlock()
			}
			select {
			case <-wctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()

	start := time.Now()
	r := c.RCAt(ctx, url, 6*time.Minute, "roll", "--group", "default", "--min-healthy-time", "1s", "--json")
	took := time.Since(start)
	_ = w.Stop()
	stopWatch()
	wg.Wait()
	st, err := decodeOut[schema.RollStatus](r)
	if err != nil {
		t.Fatalf("roll: %v", err)
	}
	t.Logf("roll %s: %s, %d/%d nodes in %s (%d node listings taken meanwhile)", st.RollID, st.State, st.Done, st.Total, took.Round(time.Millisecond), listings)
	if st.State != schema.RollCompleted || st.Done != len(Nodes) || st.Total != len(Nodes) || len(st.Failed) != 0 {
		t.Errorf("roll status: state %s done %d/%d failed %v message %q; want completed 5/5", st.State, st.Done, st.Total, st.Failed, st.Message)
	}
	rolled := map[string]bool{}
	for _, n := range st.Nodes {
		if n.Error != "" {
			t.Errorf("roll: %s: %s", n.NodeID, n.Error)
		}
		rolled[n.NodeID] = true
	}
	for _, id := range Nodes {
		if !rolled[id] {
			t.Errorf("roll status does not list %s: %s", id, r.stdout)
		}
	}
	if len(deleted) > 0 {
		t.Errorf("node registrations deleted or purged during the roll: %v", deleted)
	}
	if len(missing) > 0 {
		t.Errorf("nodes missing from `restartcoord nodes` during the roll: %v", missing)
	}
	if listings == 0 {
		t.Errorf("no `restartcoord nodes` listing succeeded during the roll")
	}

	for _, id := range Nodes {
		h, err := c.healthAt(ctx, url, id)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Healthy || h.WorkerPID <= 0 || h.WorkerPID == before[id].WorkerPID {
			t.Errorf("%s after the roll: healthy %v, worker pid %d (before %d); want healthy with a new worker",
				id, h.Healthy, h.WorkerPID, before[id].WorkerPID)
		}
		// The supervisor stayed: same instance, same process, registered.
		if got := registration(t, ctx, kv, id); got.Instance != reg[id].Instance || got.PID != reg[id].PID || !got.StartedAt.Equal(reg[id].StartedAt) {
			t.Errorf("%s registration changed over the roll: before %+v, after %+v", id, reg[id], got)
		}
		t.Logf("%s: worker pid %d -> %d", id, before[id].WorkerPID, h.WorkerPID)
	}
	if err := allHealthy(mustNodes(t, ctx, c)); err != nil {
		t.Errorf("after the roll: %v", err)
	}
}

// registration reads a node's ORCH_NODES entry.
func registration(t *testing.T, ctx context.Context, kv jetstream.KeyValue, id string) schema.NodeInfo {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	e, err := kv.Get(cctx, id)
	if err != nil {
		t.Fatalf("%s %s: %v", schema.BucketNodes, id, err)
	}
	var info schema.NodeInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		t.Fatalf("%s %s: %v: %s", schema.BucketNodes, id, err, e.Value())
	}
	return info
}

func mustNodes(t *testing.T, ctx context.Context, c *Cluster) schema.NodeList {
	t.Helper()
	l, err := c.nodesAt(ctx, c.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testNodeKillRejoin: SIGKILL of a node's container (supervisor and worker
// die at once, no deregistration) shows the node unhealthy while the others
// stay healthy; the same container started again retakes the node id once
// the dead supervisor's lease expires, is healthy with a new worker, and
// holds every task it had, with the same content.
func testNodeKillRejoin(t *testing.T, ctx context.Context, c *Cluster) {
	const victim, clientID = "node-2", "itest-kill"
	c.waitAllHealthy(t, ctx, 60*time.Second)
	url := c.NATSURL()

	// State on node-2: an open task, one with progress and a checkpoint,
	// a completed one with a result, a failed one.
	create := func(title, desc string) schema.Task {
		t.Helper()
		tk, err := decodeOut[schema.Task](c.RCAt(ctx, url, 40*time.Second, "task", "create", victim, "--title", title,
			"--description", desc, "--client", clientID, "--json"))
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	open := create("kill-rejoin open", "stays pending")
	progressed := create("kill-rejoin progressed", "has a checkpoint")
	done := create("kill-rejoin done", "completed with a result")
	failed := create("kill-rejoin failed", "failed with an error")
	for _, r := range []result{
		c.RCAt(ctx, url, 40*time.Second, "task", "update", victim, progressed.TaskID, "--progress", "42.5", "--checkpoint", `{"step":7,"cursor":"abc"}`, "--client", clientID, "--json"),
		c.RCAt(ctx, url, 40*time.Second, "task", "complete", victim, done.TaskID, "--result", `{"rows":1234}`, "--client", clientID, "--json"),
		c.RCAt(ctx, url, 40*time.Second, "task", "fail", victim, failed.TaskID, "--error", "disk full", "--client", clientID, "--json"),
	} {
		if err := r.ok(); err != nil {
			t.Fatal(err)
		}
	}
	// What the node holds now: every task it lists, each as `task get` shows it.
	list, err := c.taskList(ctx, url, victim, clientID)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]schema.Task{}
	for _, tk := range list.Tasks {
		got, err := c.taskGet(ctx, url, victim, clientID, tk.TaskID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(&tk) {
			t.Errorf("task %s: list shows %+v, get %+v", tk.TaskID, tk, got)
		}
		recorded[tk.TaskID] = got
	}
	for _, tk := range []schema.Task{open, progressed, done, failed} {
		if _, ok := recorded[tk.TaskID]; !ok {
			t.Fatalf("task %s (%s) missing from the list before the kill", tk.TaskID, tk.Title)
		}
	}
	if p := recorded[progressed.TaskID]; p.Progress != 42.5 || string(p.Checkpoint) == "" {
		t.Errorf("the update did not take: %+v", p)
	}
	if d := recorded[done.TaskID]; d.Status != schema.TaskCompleted || string(d.Result) == "" {
		t.Errorf("the completion did not take: %+v", d)
	}
	if f := recorded[failed.TaskID]; f.Status != schema.TaskFailed || f.Error != "disk full" {
		t.Errorf("the failure did not take: %+v", f)
	}

	hBefore, err := c.healthAt(ctx, url, victim)
	if err != nil {
		t.Fatal(err)
	}
	kv := openNodesBucket(t, ctx, url, "integration-kill")
	regBefore := registration(t, ctx, kv, victim)

	killedAt := time.Now()
	if err := c.Kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s (worker pid %d, %d tasks)", victim, hBefore.WorkerPID, len(recorded))

	took := eventually(t, 60*time.Second, victim+" unhealthy in `restartcoord nodes` after the kill", func() error {
		l, err := c.nodesAt(ctx, url)
		if err != nil {
			return err
		}
		n, ok := byID(l)[victim]
		if !ok {
			return fmt.Errorf("%s is not listed at all (want it listed, unhealthy)", victim)
		}
		if n.Healthy {
			return fmt.Errorf("%s still healthy: %+v", victim, n)
		}
		// The others are untouched.
		for id, o := range byID(l) {
			if id != victim && (!o.Healthy || !o.Answering) {
				return fmt.Errorf("%s unhealthy while %s is down: %+v", id, victim, o)
			}
		}
		t.Logf("%s after the kill: healthy=%v answering=%v failed=%v phase=%s", victim, n.Healthy, n.Answering, n.Failed, n.Phase)
		return nil
	})
	t.Logf("%s seen unhealthy %s after the kill", victim, took.Round(time.Millisecond))
	if r := c.RCAt(ctx, url, 20*time.Second, "health", victim, "--json", "--timeout", "3s"); r.code == 0 {
		t.Errorf("a killed node answered its health request: %s", r)
	}

	if err := c.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	var hAfter schema.Health
	took = eventually(t, 90*time.Second, victim+" healthy again after its container started again", func() error {
		l, err := c.nodesAt(ctx, url)
		if err != nil {
			return err
		}
		if err := allHealthy(l); err != nil {
			return err
		}
		h, err := c.healthAt(ctx, url, victim)
		if err != nil {
			return err
		}
		if !h.Healthy {
			return fmt.Errorf("%s answers unhealthy: %+v", victim, h)
		}
		hAfter = h
		return nil
	})
	t.Logf("%s healthy again %s after its container started (worker pid %d -> %d)", victim, took.Round(time.Millisecond), hBefore.WorkerPID, hAfter.WorkerPID)

	// A new supervisor and a new worker: a new instance registered after the
	// kill, a worker younger than the restart. (The container's PID namespace
	// is new, so the worker's PID number alone can repeat.)
	regAfter := registration(t, ctx, kv, victim)
	if regAfter.Instance == regBefore.Instance || !regAfter.StartedAt.After(killedAt.Add(-time.Second)) {
		t.Errorf("%s registration after the restart: %+v; before the kill: %+v (want a new instance started after the kill)", victim, regAfter, regBefore)
	}
	if maxAge := time.Since(restartedAt) + 5*time.Second; hAfter.WorkerPID <= 0 || time.Duration(hAfter.WorkerUptime*float64(time.Second)) > maxAge {
		t.Errorf("%s worker after the restart: pid %d, uptime %.1fs; want a worker started after the restart (at most %s)",
			victim, hAfter.WorkerPID, hAfter.WorkerUptime, maxAge.Round(time.Second))
	}

	// Every task, with the same content, from the node after the restart.
	after, err := c.taskList(ctx, url, victim, clientID)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]schema.Task{}
	for _, tk := range after.Tasks {
		listed[tk.TaskID] = tk
	}
	for id, want := range recorded {
		got, ok := listed[id]
		if !ok {
			t.Errorf("task %s (%s) lost over the kill", id, want.Title)
			continue
		}
		if !got.Equal(&want) {
			t.Errorf("task %s changed over the kill:\n got  %+v\n want %+v", id, got, want)
		}
		fromGet, err := c.taskGet(ctx, url, victim, clientID, id)
		if err != nil {
			t.Error(err)
		} else if !fromGet.Equal(&want) {
			t.Errorf("task get %s after the kill:\n got  %+v\n want %+v", id, fromGet, want)
		}
	}
	if len(after.Tasks) != len(recorded) {
		t.Errorf("%s lists %d tasks after the kill, %d before", victim, len(after.Tasks), len(recorded))
	}
}

// testNATSServerKill: SIGKILL of a NATS server (R3 keeps a quorum of two):
// every node stays reachable and healthy through the other servers, tasks
// are created meanwhile; the server started again catches up (every stream
// current on the three servers) and serves: through it alone, the nodes are
// healthy and the tasks created during the outage are all there.
func testNATSServerKill(t *testing.T, ctx context.Context, c *Cluster) {
	const clientID = "itest-outage"
	c.waitAllHealthy(t, ctx, 60*time.Second)

	// The victim: the server leading ORCH_JOURNAL, so that the stream the
	// tasks are written to must elect a new leader during the outage.
	victim := journalLeader(t, ctx, c.NATSURL())
	if !slices.Contains(NATSServers, victim) {
		t.Fatalf("%s is led by %q, not one of %v", schema.StreamJournal, victim, NATSServers)
	}
	if err := c.Kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	url := c.NATSURL()
	if strings.Count(url, "nats://") != 2 {
		t.Fatalf("with %s down the host URLs are %q, want the two others", victim, url)
	}
	t.Logf("killed %s (the %s leader); serving through %s", victim, schema.StreamJournal, url)

	took := eventually(t, 60*time.Second, "every node healthy through the other servers", func() error { return c.allHealthyAt(ctx, url) })
	t.Logf("all nodes healthy through the other servers %s after the kill", took.Round(time.Millisecond))

	// Tasks created during the outage, each with its own request id: a
	// retry (the stream leader may be moving) applies it at most once.
	created := map[string]schema.Task{} // task id -> as the node answered
	createdOn := map[string]string{}    // task id -> node
	for i, node := range []string{"node-1", "node-3", "node-5", "node-1"} {
		reqID := fmt.Sprintf("outage-%s-%d-%s", node, i, randomID())
		var tk schema.Task
		attempts := 0
		eventually(t, 60*time.Second, "task create on "+node+" during the outage", func() error {
			attempts++
			r := c.RCAt(ctx, url, 40*time.Second, "task", "create", node, "--title", fmt.Sprintf("outage %d", i),
				"--description", "created while "+victim+" was down", "--client", clientID, "--request-id", reqID, "--json")
			var err error
			if tk, err = decodeOut[schema.Task](r); err != nil {
				t.Logf("task create on %s, attempt %d: exit %d: %s", node, attempts, r.code, bytes.TrimSpace(r.stderr))
			}
			return err
		})
		got, err := c.taskGet(ctx, url, node, clientID, tk.TaskID)
		if err != nil {
			t.Fatal(err)
		}
		created[tk.TaskID], createdOn[tk.TaskID] = got, node
	}

	if err := c.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	only := c.ServerURL(ctx, victim)
	if only == "" {
		t.Fatalf("%s has no published client port after its restart", victim)
	}
	t.Logf("%s started again at %s", victim, only)

	// It catches up: every stream has its three peers current.
	js := jetStreamAt(t, ctx, only, "integration-outage")
	var seen []string // the distinct reasons it was not yet so
	took = eventually(t, 90*time.Second, "every stream current on nats-1..3 after the restart", func() error {
		err := streamsCurrent(ctx, js)
		if err != nil && !slices.Contains(seen, err.Error()) {
			seen = append(seen, err.Error())
		}
		return err
	})
	if len(seen) > 0 {
		t.Logf("on the way: %s", strings.Join(seen, "; "))
	}
	t.Logf("every stream current on the three servers %s after the restart", took.Round(time.Millisecond))

	// Through the restarted server alone: healthy nodes, the outage's tasks.
	eventually(t, 60*time.Second, "every node healthy through "+victim+" alone", func() error { return c.allHealthyAt(ctx, only) })
	for id, want := range created {
		got, err := c.taskGet(ctx, only, createdOn[id], clientID, id)
		if err != nil {
			t.Errorf("task %s on %s after the outage: %v", id, createdOn[id], err)
			continue
		}
		if !got.Equal(&want) {
			t.Errorf("task %s on %s after the outage:\n got  %+v\n want %+v", id, createdOn[id], got, want)
		}
	}
	perNode := map[string]int{}
	for _, node := range createdOn {
		perNode[node]++
	}
	for node, n := range perNode {
		l, err := c.taskList(ctx, only, node, clientID)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, tk := range l.Tasks {
			if createdOn[tk.TaskID] == node {
				found++
			}
		}
		if found != n {
			t.Errorf("%s lists %d of the %d tasks created on it during the outage", node, found, n)
		}
	}
}

// jetStreamAt is JetStream through the server at url alone, its connection
// closed when the test ends.
func jetStreamAt(t *testing.T, ctx context.Context, url, name string) jetstream.JetStream {
	t.Helper()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: url, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	js, err := jetstream.New(conn.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// journalLeader is the server leading ORCH_JOURNAL.
func journalLeader(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	js := jetStreamAt(t, ctx, url, "integration-leader")
	cctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	s, err := js.Stream(cctx, schema.StreamJournal)
	if err != nil {
		t.Fatal(err)
	}
	if ci := s.CachedInfo().Cluster; ci != nil {
		return ci.Leader
	}
	return ""
}

// apiWait bounds each JetStream API call of the tests: an unanswered
// request (a server catching up, a leader moving) fails it, and the caller
// polls again.
const apiWait = 10 * time.Second

func nodesBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	cctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	return js.KeyValue(cctx, schema.BucketNodes)
}

// streamsCurrent is nil when every stream has a leader and its two other
// peers current, the three being nats-1..3.
func streamsCurrent(ctx context.Context, js jetstream.JetStream) error {
	cctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	names := js.StreamNames(cctx)
	var all []string
	for name := range names.Name() {
		all = append(all, name)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("stream names: %w", err)
	}
	if len(all) < 5 {
		return fmt.Errorf("%d streams listed: %v", len(all), all)
	}
	for _, name := range all {
		s, err := js.Stream(cctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		ci := s.CachedInfo().Cluster
		if ci == nil || ci.Leader == "" {
			return fmt.Errorf("stream %s: no leader", name)
		}
		peers := []string{ci.Leader}
		for _, p := range ci.Replicas {
			if !p.Current || p.Offline {
				return fmt.Errorf("stream %s: replica %s current=%v offline=%v lag %d", name, p.Name, p.Current, p.Offline, p.Lag)
			}
			peers = append(peers, p.Name)
		}
		slices.Sort(peers)
		if !slices.Equal(peers, NATSServers) {
			return fmt.Errorf("stream %s: peers %v", name, peers)
		}
	}
	return nil
}

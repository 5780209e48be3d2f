package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// journalTap records, live, every journal entry of a node: which request
// ids were journaled, how often, and in what order.
type journalTap struct {
	mu    sync.Mutex
	order []string // request ids in journal order
	count map[string]int
	stop  func()
}

func tapJournal(t *testing.T, e *env, nodeID string) *journalTap {
	t.Helper()
	ctx := context.Background()
	cons, err := e.bs.JetStream().OrderedConsumer(ctx, schema.StreamJournal, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.JournalSubject(nodeID)}})
	if err != nil {
		t.Fatal(err)
	}
	tap := &journalTap{count: map[string]int{}}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var je schema.JournalEntry
		if json.Unmarshal(m.Data(), &je) != nil || je.RequestID == "" {
			return
		}
		tap.mu.Lock()
		tap.order = append(tap.order, je.RequestID)
		tap.count[je.RequestID]++
		tap.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	tap.stop = cc.Stop
	return tap
}

// loadRun is the ground truth of a load test: what each client was told.
type loadRun struct {
	ledger *ledger
	mu     sync.Mutex
	calls  map[string][]string // client -> request ids in the order the calls were made
	errs   []error
}

// loadClients creates n clients of a node, in the test's goroutine (t.Fatal
// works only there) and before any fault is injected.
func loadClients(e *env, nodeID string, n int) []*client.Client {
	cs := make([]*client.Client, n)
	for i := range cs {
		cs[i] = e.client(fmt.Sprintf("load-%02d", i), nodeID)
	}
	return cs
}

// runLoad makes `per` calls from each client (creates, and updates of the
// client's own counter task), each call waiting for its answer, recording
// every request id and every acknowledged task. It never calls t.Fatal: it
// runs beside the test's goroutine.
func runLoad(clients []*client.Client, per int) *loadRun {
	run := &loadRun{ledger: newLedger(), calls: map[string][]string{}}
	var wg sync.WaitGroup
	for _, c := range clients {
		id := c.ClientID()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var counter *schema.Task
			for j := range per {
				reqID := uuid.NewString()
				var op string
				var args any
				if counter == nil || j%2 == 1 {
					op, args = schema.OpTaskCreate, schema.TaskCreateArgs{Title: fmt.Sprintf("%s-%d", id, j)}
				} else {
					op, args = schema.OpTaskUpdate, schema.TaskUpdateArgs{TaskID: counter.TaskID, Checkpoint: json.RawMessage(fmt.Sprintf(`{"n":%d}`, j))}
				}
				run.mu.Lock()
				run.calls[id] = append(run.calls[id], reqID)
				run.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				raw, err := c.DoID(ctx, reqID, op, args)
				cancel()
				if err != nil {
					run.mu.Lock()
					run.errs = append(run.errs, fmt.Errorf("%s call %d (%s): %w", id, j, op, err))
					run.mu.Unlock()
					return
				}
				var task schema.Task
				if err := json.Unmarshal(raw, &task); err != nil {
					run.mu.Lock()
					run.errs = append(run.errs, err)
					run.mu.Unlock()
					return
				}
				run.ledger.ack(&task)
				if counter == nil {
					counter = &task
				}
			}
		}()
	}
	wg.Wait()
	return run
}

// check compares the run with what JetStream holds: every acknowledged task
// by content, every call journaled exactly once, each client's calls in the
// journal in the order it made them.
func (run *loadRun) check(t *testing.T, tap *journalTap, reader *client.Client) {
	t.Helper()
	for _, err := range run.errs {
		t.Error(err)
	}
	if len(run.errs) > 0 {
		t.FailNow()
	}
	run.ledger.check(t, reader)
	waitFor(t, 10*time.Second, "the journal tap to catch up", func() bool {
		tap.mu.Lock()
		defer tap.mu.Unlock()
		for _, ids := range run.calls {
			if tap.count[ids[len(ids)-1]] == 0 {
				return false
			}
		}
		return true
	})
	tap.stop()
	tap.mu.Lock()
	defer tap.mu.Unlock()
	pos := make(map[string]int, len(tap.order))
	for i, id := range tap.order {
		if _, seen := pos[id]; !seen {
			pos[id] = i
		}
	}
	total := 0
	for client, ids := range run.calls {
		last := -1
		for j, id := range ids {
			total++
			switch n := tap.count[id]; {
			case n == 0:
				t.Fatalf("%s call %d (%s) acknowledged but never journaled", client, j, id)
			case n > 1:
				t.Fatalf("%s call %d (%s) journaled %d times", client, j, id, n)
			}
			if pos[id] < last {
				t.Fatalf("%s call %d applied before its call %d", client, j, j-1)
			}
			last = pos[id]
		}
	}
	t.Logf("%d calls: every one answered, journaled exactly once, in order per client; %d tasks compared by content", total, len(run.ledger.tasks))
}

func TestLoadWithRestartsLosesNothing(t *testing.T) {
	clients, per, restarts := 20, 500, 10
	if testing.Short() {
		clients, per, restarts = 5, 100, 4
	}
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	tap := tapJournal(t, e, "n1")
	done := make(chan *loadRun, 1)
	cs := loadClients(e, "n1", clients)
	go func() { done <- runLoad(cs, per) }()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var kinds []string
	for i := 0; i < restarts; i++ {
		select {
		case <-done:
			t.Fatalf("the load finished after only %d of %d restarts: raise the load", i, restarts)
		case <-time.After(time.Duration(100+rng.IntN(400)) * time.Millisecond):
		}
		body := map[string]any{"reason": "rolling_restart"}
		kind := "graceful"
		if rng.IntN(2) == 0 {
			body, kind = map[string]any{"graceful": false, "reason": "error_recovery"}, "emergency"
		}
		r := e.restart("n1", body)
		if !r.Success {
			t.Fatalf("restart %d (%s): %+v", i, kind, r)
		}
		kinds = append(kinds, fmt.Sprintf("%s %.0fms", kind, r.Duration*1000))
	}
	run := <-done
	t.Logf("restarts during the load: %v", kinds)
	run.check(t, tap, e.client("reader", "n1"))
}

var _ = nats.MsgIdHdr

// newClusterEnv is a 3-server NATS cluster with the store replicated (R3).
func newClusterEnv(t *testing.T) (*env, *bus.Cluster) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := bus.StartCluster(ctx, 3, filepath.Join(dir, "cluster"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: c.URLs(), Name: "test"})
	if err != nil {
		c.Stop()
		t.Fatal(err)
	}
	bs, err := bus.NewStore(conn)
	if err != nil {
		t.Fatal(err)
	}
	sc := bus.DefaultStoreConfig()
	sc.Replicas = 3
	if err := bus.Init(ctx, bs.JetStream(), sc); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, url: c.URLs(), conn: conn, bs: bs, dir: dir}
	t.Cleanup(func() {
		conn.Close()
		c.Stop()
	})
	return e, c
}

func TestLoadWithNATSServerRestartLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-server NATS cluster")
	}
	e, cluster := newClusterEnv(t)
	cfg := e.fastConfig("n1")
	e.startNode(cfg)
	tap := tapJournal(t, e, "n1")
	done := make(chan *loadRun, 1)
	cs := loadClients(e, "n1", 20)
	go func() { done <- runLoad(cs, 100) }()
	time.Sleep(500 * time.Millisecond)
	victim := 1
	cluster.StopServer(victim)
	t.Logf("server %d stopped", victim+1)
	time.Sleep(2 * time.Second)
	if err := cluster.Start(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("server %d started again", victim+1)
	run := <-done
	run.check(t, tap, e.client("reader", "n1"))
}

// TestNodeStartRidesAJetStreamOutage: a node restarted after its predecessor
// was killed waits for the dead one's node-id lease to expire; a JetStream
// outage during that wait (two of three servers down: no quorum for the R3
// leases bucket) is retried, not a failed start (found by the chaos suite:
// the supervisor exited with "acquire lease: no response from stream").
// The outage outlasts the wait's window (LeaseTTL + 2 s): the window counts
// from JetStream answering again, since only a stream leader expires the
// lease (found by CI: an 8 s election outlasted a window counted from the
// start of the wait).
func TestNodeStartRidesAJetStreamOutage(t *testing.T) {
	e, cl := newClusterEnv(t)
	cfg := e.fastConfig("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.bs.JetStream().KeyValue(ctx, schema.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, schema.LeaseKeyNode("n1"), []byte("n1@a-dead-predecessor"), jetstream.KeyTTL(cfg.LeaseTTL)); err != nil {
		t.Fatal(err)
	}
	outage := make(chan struct{})
	go func() {
		defer close(outage)
		time.Sleep(500 * time.Millisecond) // the node is waiting for the lease by now
		cl.StopServer(1)
		cl.StopServer(2)
		time.Sleep(cfg.LeaseTTL + 3*time.Second)
		for _, i := range []int{1, 2} {
			if err := cl.Start(i); err != nil {
				t.Error(err)
			}
		}
	}()
	e.startNode(cfg) // fails the test if the node does not start
	<-outage
	// The first worker may fail its own start on a cluster still
	// recovering; the supervisor starts another with its backoff.
	waitFor(t, 30*time.Second, "n1 healthy after the outage", func() bool { return e.health("n1").Healthy })
}

// TestRestartRidesAJetStreamOutage: the new worker of a restart that cannot
// reach JetStream (two of three servers down: no quorum) exits as a
// temporary failure and the supervisor starts another until one serves,
// within the start timeout; the restart succeeds (found by the chaos suite:
// an emergency restart failed with "journal replay: no responders").
func TestRestartRidesAJetStreamOutage(t *testing.T) {
	e, cl := newClusterEnv(t)
	e.startNode(e.fastConfig("n1"))
	cl.StopServer(1)
	cl.StopServer(2)
	back := make(chan struct{})
	go func() {
		defer close(back)
		time.Sleep(12 * time.Second) // past a first worker's 10 s start
		for _, i := range []int{1, 2} {
			if err := cl.Start(i); err != nil {
				t.Error(err)
			}
		}
	}()
	// Both the node's and the test's connections move to the server left.
	waitFor(t, 10*time.Second, "n1 answering through the server left", func() bool {
		var h schema.Health
		hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
		defer hcancel()
		return e.conn.RequestJSON(hctx, schema.NodeSubject("n1", schema.OpHealth), nil, nil, &h) == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var res schema.RestartResult
	err := e.conn.RequestJSON(ctx, schema.NodeSubject("n1", schema.OpRestart), map[string]any{"graceful": false, "reason": "error_recovery"}, nil, &res)
	<-back
	if err != nil {
		t.Fatalf("restart across the outage: %v", err)
	}
	if !res.Success {
		t.Fatalf("restart across the outage failed: %s %v", res.Message, res.Errors)
	}
	retried := false
	for _, n := range res.Errors {
		retried = retried || strings.Contains(n, "could not reach JetStream")
	}
	if !retried {
		t.Fatalf("no worker was replaced for a temporary failure (the outage did not reach the restart?): %v", res.Errors)
	}
	t.Logf("restart across the outage: %.1fs, notes %v", res.Duration, res.Errors)
	// Let JetStream settle and the node refresh its lease before it stops
	// (deregistering and releasing need a JetStream that answers).
	waitFor(t, 30*time.Second, "JetStream answering", func() bool {
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		defer acancel()
		_, err := e.bs.JetStream().AccountInfo(actx)
		return err == nil
	})
	time.Sleep(3 * time.Second)
}

// TestBatchStoredByAnEarlierWorkerIsNotTakenForOurs: a worker's journal batch
// that times out may land after the next worker has restored. That worker,
// given the same request again, must not take the stored batch (found by its
// message id) for its own: it holds the earlier worker's effects and reply.
// The worker gives up, the next restores the batch, and the client gets the
// journaled answer (found by the chaos suite: the client was given a task id
// the journal never held).
func TestBatchStoredByAnEarlierWorkerIsNotTakenForOurs(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	cl := e.client("c1", "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The earlier worker's batch for request R, landed after this worker restored.
	reqID := uuid.NewString()
	now := time.Now().UTC().Truncate(time.Millisecond)
	theirs := schema.Task{TaskID: uuid.NewString(), Title: "made by the earlier worker", Status: schema.TaskPending, CreatedAt: now, UpdatedAt: now}
	entry := &schema.JournalEntry{V: schema.JournalVersion, At: now, RequestID: reqID, ClientID: "c1", Op: schema.OpTaskCreate,
		Task: &theirs, Reply: schema.TaskReplyBody(reqID, &theirs, nil)}
	if _, err := e.bs.Append(ctx, "n1", "n1:"+reqID, entry); err != nil {
		t.Fatal(err)
	}
	before := e.health("n1").WorkerPID
	raw, err := cl.DoID(ctx, reqID, schema.OpTaskCreate, schema.TaskCreateArgs{Title: "made by this worker"})
	if err != nil {
		t.Fatal(err)
	}
	var got schema.Task
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.TaskID != theirs.TaskID || got.Title != theirs.Title {
		t.Fatalf("answered %s %q; the journal holds %s %q for this request", got.TaskID, got.Title, theirs.TaskID, theirs.Title)
	}
	if after := e.health("n1").WorkerPID; after == before {
		t.Errorf("worker %d kept serving after finding another worker's batch", after)
	}
	// And a restore finds exactly that task. The crash recovery that
	// replaced the worker may still be finishing (the new worker answers
	// before it ends): a restart now would get RESTART_IN_PROGRESS.
	waitFor(t, 30*time.Second, "n1 healthy after its crash recovery", func() bool { return e.health("n1").Healthy })
	e.restart("n1", map[string]any{"graceful": false, "reason": "error_recovery"})
	back, err := cl.GetTask(ctx, theirs.TaskID)
	if err != nil || !back.Equal(&theirs) {
		t.Fatalf("after a restore: %+v, %v; want %+v", back, err, theirs)
	}
}

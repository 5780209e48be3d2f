package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// A full buffer is refused at the moment of the call, not after a timeout;
// the 100 requests it holds wait for the node and are each applied once, in
// the order they were sent.
func TestBufferFullIsRefusedAtOnceAndTheBufferedAreAnsweredAfter(t *testing.T) {
	e := newEnv(t)
	n := e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	n.stop()

	ctx := testCtx(t, 60*time.Second)
	calls := make([]*client.Call, 100)
	for i := range calls {
		calls[i] = c.Go(ctx, schema.OpTaskCreate, schema.TaskCreateArgs{Title: fmt.Sprintf("req-%03d", i)})
		select {
		case <-calls[i].Done():
			_, err := calls[i].Wait()
			t.Fatalf("request %d ended while its node is down: %v", i, err)
		default:
		}
	}
	if d := e.bufferDepth("n1", "c1"); d != 100 {
		t.Fatalf("buffer holds %d requests, want 100", d)
	}
	start := time.Now()
	_, err := c.Do(ctx, schema.OpTaskCreate, schema.TaskCreateArgs{Title: "one too many"})
	took := time.Since(start)
	if !errors.Is(err, client.ErrBufferFull) {
		t.Fatalf("101st request: %v, want ErrBufferFull", err)
	}
	mustCode(t, err, schema.CodeBufferFull)
	if took > time.Second {
		t.Fatalf("the full buffer was reported after %s, want at once", took)
	}
	t.Logf("full buffer reported in %s", took.Round(time.Microsecond))

	e.startNode(e.fastConfig("n1"))
	told := make([]*schema.Task, len(calls))
	for i, call := range calls {
		task, err := client.TaskOf(call.Wait())
		if err != nil {
			t.Fatalf("buffered request %d: %v", i, err)
		}
		if want := fmt.Sprintf("req-%03d", i); task.Title != want {
			t.Fatalf("request %d answered with task %q, want %q", i, task.Title, want)
		}
		told[i] = task
	}
	got := byTitle(t, c)
	for _, task := range told {
		appliedOnce(t, got, task)
	}
	if n := len(got["one too many"]); n != 0 {
		t.Fatalf("the refused request was applied %d times", n)
	}
	// Applied in the order sent: task ids (uuid v7) follow creation order.
	ids := make([]string, len(told))
	for i, task := range told {
		ids[i] = task.TaskID
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("buffered requests were not applied in the order they were sent")
	}
}

// A request older than the buffer's expiration is answered EXPIRED (and so
// is a repeat of it), and nothing is applied.
func TestExpiredRequestIsAnsweredExpiredAndNotApplied(t *testing.T) {
	store := bus.DefaultStoreConfig()
	store.BufferExpiration = 2 * time.Second
	e := newEnvWith(t, envOptions{store: store})
	cfg := e.fastConfig("n1")
	cfg.BufferExpiration = 2 * time.Second
	n := e.startNode(cfg)
	c := e.client("c1", "n1")
	n.stop()

	ctx := testCtx(t, 60*time.Second)
	id := uuid.NewString()
	call := c.GoID(ctx, id, schema.OpTaskCreate, schema.TaskCreateArgs{Title: "too late"})
	select {
	case <-call.Done():
		_, err := call.Wait()
		t.Fatalf("request ended while its node is down: %v", err)
	default:
	}
	time.Sleep(3 * time.Second) // longer than the expiration, by design
	e.startNode(cfg)
	_, err := call.Wait()
	if !errors.Is(err, client.ErrExpired) {
		t.Fatalf("got %v, want ErrExpired", err)
	}
	mustCode(t, err, schema.CodeExpired)
	// The same id again gets the same answer (kept with the request id).
	if _, err := c.DoID(ctx, id, schema.OpTaskCreate, schema.TaskCreateArgs{Title: "too late"}); !errors.Is(err, client.ErrExpired) {
		t.Fatalf("repeat of the expired request: %v, want ErrExpired", err)
	}
	if n := len(byTitle(t, c)["too late"]); n != 0 {
		t.Fatalf("the expired request was applied %d times", n)
	}
}

// A caller that gave up on a request (and then its whole process went away)
// comes back as a new Client with the same client id and retries with the
// same request id: it gets the original answer, and the effect exists once.
// One retry is made while the node is still down (the answer is fetched when
// it is back), one after.
func TestClientProcessRestartRetriesAndGetsTheOriginalAnswer(t *testing.T) {
	e := newEnv(t)
	n := e.startNode(e.fastConfig("n1"))
	first := e.client("c1", "n1")
	n.stop()

	id := uuid.NewString()
	args := schema.TaskCreateArgs{Title: "sent before a crash"}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := first.DoID(short, id, schema.OpTaskCreate, args)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request to a stopped node: %v, want the caller's deadline", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	// The process comes back before the node does, and retries.
	ctx := testCtx(t, 60*time.Second)
	second := e.client("c1", "n1", client.WithoutNodeCheck())
	early := second.GoID(ctx, id, schema.OpTaskCreate, args)
	e.startNode(e.fastConfig("n1"))
	told, err := client.TaskOf(early.Wait())
	if err != nil {
		t.Fatalf("retry while the node was down: %v", err)
	}
	if told.Title != args.Title {
		t.Fatalf("retry answered with %+v", told)
	}
	// Another process retries once the node is back: the same answer.
	third := e.client("c1", "n1")
	again, err := client.TaskOf(third.DoID(ctx, id, schema.OpTaskCreate, args))
	if err != nil {
		t.Fatalf("retry after the node was back: %v", err)
	}
	if !again.Equal(told) {
		t.Fatalf("retries got different answers:\n %+v\n %+v", again, told)
	}
	appliedOnce(t, byTitle(t, third), told)
	for name, cl := range map[string]*client.Client{"second": second, "third": third} {
		if s := cl.Stats(); s.Duplicates != 1 || s.KeptReplies != 1 {
			t.Fatalf("%s client: stats %+v, want its retry found a duplicate and fetched the kept reply", name, s)
		}
	}
}

// Notice callbacks see a graceful restart begin (with its reason and the
// seconds to expect) and end; a call made in between waits and succeeds.
func TestNoticesOfAGracefulRestart(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	notices := make(chan schema.Notice, 16)
	c := e.client("c1", "n1", client.WithNotices(func(n schema.Notice) { notices <- n }))
	ctx := testCtx(t, 60*time.Second)

	res := make(chan schema.RestartResult, 1)
	go func() { res <- e.restart("n1", map[string]any{"reason": string(schema.ReasonRollingRestart)}) }()
	next := func() schema.Notice {
		select {
		case n := <-notices:
			return n
		case <-time.After(30 * time.Second):
			t.Fatal("no notice within 30s")
		}
		return schema.Notice{}
	}
	pending := next()
	if pending.Event != schema.NoticeRestartPending || pending.Reason != schema.ReasonRollingRestart ||
		pending.ExpectedSeconds <= 0 || pending.NodeID != "n1" {
		t.Fatalf("first notice %+v, want %s with reason %s and expected_seconds > 0",
			pending, schema.NoticeRestartPending, schema.ReasonRollingRestart)
	}
	during := c.Go(ctx, schema.OpTaskCreate, schema.TaskCreateArgs{Title: "between the notices"})
	complete := next()
	if complete.Event != schema.NoticeRestartComplete || complete.NodeID != "n1" {
		t.Fatalf("second notice %+v, want %s", complete, schema.NoticeRestartComplete)
	}
	r := <-res
	if !r.Success {
		t.Fatalf("restart failed: %+v", r)
	}
	if pending.RestartID != r.RestartID || complete.RestartID != r.RestartID {
		t.Fatalf("notices name restarts %q and %q, the restart was %q", pending.RestartID, complete.RestartID, r.RestartID)
	}
	task, err := client.TaskOf(during.Wait())
	if err != nil {
		t.Fatalf("call made during the restart: %v", err)
	}
	appliedOnce(t, byTitle(t, c), task)
	select {
	case n := <-notices:
		t.Fatalf("unexpected third notice %+v", n)
	default:
	}
}

// A client of a node that never joined is refused by New, so no request is
// left in the buffer of a node that does not exist; a node that answers
// health while out of the registry (restarting its process) is accepted.
func TestNodeThatNeverJoinedIsUnknown(t *testing.T) {
	e := newEnv(t)
	nc := e.dial()
	start := time.Now()
	_, err := client.New(nc, "c1", "never-joined")
	if !errors.Is(err, client.ErrNodeUnknown) {
		t.Fatalf("New for a node that never joined: %v, want ErrNodeUnknown", err)
	}
	mustCode(t, err, schema.CodeNotFound)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("ErrNodeUnknown took %s", took)
	}
	if d := e.bufferDepth("never-joined", "c1"); d != 0 {
		t.Fatalf("%d requests left in the buffer of a node that does not exist", d)
	}

	// Out of the registry but answering health: accepted.
	sub, err := nc.Subscribe(schema.NodeSubject("restarting", schema.OpHealth), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"type":"` + schema.TypeHealth + `","healthy":false}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c, err := client.New(nc, "c1", "restarting")
	if err != nil {
		t.Fatalf("New for a node answering health: %v", err)
	}
	_ = c.Close()

	// Without the check, New does not look.
	c, err = client.New(nc, "c1", "never-joined", client.WithoutNodeCheck())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

// A NATS server that restarts (same store, same port) while a client makes
// calls in a loop: every call succeeds, none errors, and each is applied
// once. Reads ride it too (their replies are not kept; they are asked again).
// CLIENT_TEST_SERVER_RESTARTS=N restarts the server N times instead of 2.
func TestNATSServerRestartLosesNoCall(t *testing.T) {
	e := newEnvWith(t, envOptions{store: bus.DefaultStoreConfig(), fixedPort: true})
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	ctx := testCtx(t, 120*time.Second)

	var (
		mu      sync.Mutex
		told    []*schema.Task
		errs    []error
		slowest time.Duration
	)
	answered := func() int { mu.Lock(); defer mu.Unlock(); return len(told) }
	rounds := 2
	if v := os.Getenv("CLIENT_TEST_SERVER_RESTARTS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			callStart := time.Now()
			task, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("loop-%04d", i)})
			if d := time.Since(callStart); d > time.Second {
				t.Logf("slow create %d: %s, ended %s", i, d, time.Now().Format("15:04:05.000"))
			}
			if err == nil {
				var got *schema.Task
				readStart := time.Now()
				if got, err = c.GetTask(ctx, task.TaskID); err == nil && !got.Equal(task) {
					err = fmt.Errorf("read back %+v, created %+v", got, task)
				}
				if d := time.Since(readStart); d > time.Second {
					t.Logf("slow read %d: %s, ended %s", i, d, time.Now().Format("15:04:05.000"))
				}
			}
			mu.Lock()
			slowest = max(slowest, time.Since(callStart))
			if err != nil {
				errs = append(errs, fmt.Errorf("call %d: %w", i, err))
			} else {
				told = append(told, task)
			}
			mu.Unlock()
		}
	}()

	for round := range rounds {
		before := answered()
		waitFor(t, 30*time.Second, "calls before the server restart", func() bool { return answered() >= before+20 })
		e.stopServer()
		t.Logf("server stopped %s", time.Now().Format("15:04:05.000"))
		time.Sleep(300 * time.Millisecond) // the server stays down a moment, calls keep coming
		e.startServer()
		t.Logf("server started %s", time.Now().Format("15:04:05.000"))
		after := answered()
		waitFor(t, 60*time.Second, fmt.Sprintf("calls after server restart %d", round+1), func() bool { return answered() >= after+20 })
	}
	close(stop)
	<-loopDone

	mu.Lock()
	defer mu.Unlock()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	got := byTitle(t, c)
	for _, task := range told {
		appliedOnce(t, got, task)
	}
	t.Logf("%d calls (a create and a read each), all answered, across %d server restarts; slowest %s; %+v",
		len(told), rounds, slowest.Round(time.Millisecond), c.Stats())
}

// Pings on orch.v1.client.<client_id>.ping are answered by a client that
// rides restarts, and no longer once it is closed.
func TestPingsAreAnsweredUntilClose(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("pinged", "n1")
	nc := e.dial()
	m, err := nc.Request(schema.ClientPingSubject("pinged"), []byte("{}"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var pong struct {
		Type          string `json:"type"`
		RidesRestarts bool   `json:"rides_restarts"`
	}
	if err := json.Unmarshal(m.Data, &pong); err != nil || pong.Type != schema.TypePong || !pong.RidesRestarts {
		t.Fatalf("pong %s (%v)", m.Data, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request(schema.ClientPingSubject("pinged"), []byte("{}"), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("ping after Close: %v, want no responders", err)
	}
}

// Close, or the NATS connection closing under the client, ends the calls
// still waiting with ErrClosed; their requests stay in the buffer.
func TestCloseFailsWaitingCalls(t *testing.T) {
	e := newEnv(t)
	n := e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	n.stop()
	call := c.Go(context.Background(), schema.OpTaskCreate, schema.TaskCreateArgs{Title: "left waiting"})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := call.Wait(); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("waiting call after Close: %v, want ErrClosed", err)
	}
	if _, err := c.Do(context.Background(), schema.OpTaskGet, schema.TaskIDArgs{TaskID: "x"}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
	if d := e.bufferDepth("n1", "c1"); d != 1 {
		t.Fatalf("buffer holds %d requests, want the 1 left waiting", d)
	}

	nc := e.dial()
	c2, err := client.New(nc, "c2", "n1", client.WithoutNodeCheck())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	call = c2.Go(context.Background(), schema.OpTaskCreate, schema.TaskCreateArgs{Title: "left waiting too"})
	nc.Close()
	select {
	case <-call.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a call outlived its connection by 10s")
	}
	if _, err := call.Wait(); !errors.Is(err, client.ErrClosed) || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("waiting call after its connection closed: %v, want ErrClosed and nats.ErrConnectionClosed", err)
	}
}

// A bad op or request id is refused before anything is sent; a refusal by
// the node comes back as its *schema.Error.
func TestRefusalsAreContractErrors(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	ctx := testCtx(t, 30*time.Second)
	_, err := c.Do(ctx, "task.explode", nil)
	mustCode(t, err, schema.CodeInvalidParameters)
	_, err = c.DoID(ctx, "", schema.OpTaskGet, schema.TaskIDArgs{TaskID: "x"})
	mustCode(t, err, schema.CodeInvalidParameters)
	_, err = c.GetTask(ctx, "no-such-task")
	mustCode(t, err, schema.CodeNotFound)
	if errors.Is(err, client.ErrBufferFull) || errors.Is(err, client.ErrExpired) {
		t.Fatalf("NOT_FOUND matched a sentinel: %v", err)
	}
	if _, ok := err.(*schema.Error); !ok {
		t.Fatalf("a reply error is %T, want the *schema.Error itself", err)
	}
	_, err = c.CreateTask(ctx, schema.TaskCreateArgs{})
	mustCode(t, err, schema.CodeInvalidParameters)
	if d := e.bufferDepth("n1", "c1"); d != 0 {
		t.Fatalf("%d requests left in the buffer", d)
	}
}

// A read keeps no reply to fetch: repeating one under the same request id
// (its first answer went to a process that is gone) sends it again and gets
// an answer.
func TestRepeatedReadIsAnsweredAgain(t *testing.T) {
	e := newEnv(t)
	n := e.startNode(e.fastConfig("n1"))
	first := e.client("c1", "n1")
	ctx := testCtx(t, 60*time.Second)
	task, err := first.CreateTask(ctx, schema.TaskCreateArgs{Title: "read twice"})
	if err != nil {
		t.Fatal(err)
	}
	n.stop()
	id := uuid.NewString()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := first.DoID(short, id, schema.OpTaskGet, schema.TaskIDArgs{TaskID: task.TaskID}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read from a stopped node: %v, want the caller's deadline", err)
	}
	_ = first.Close()
	e.startNode(e.fastConfig("n1"))
	second := e.client("c1", "n1")
	got, err := client.TaskOf(second.DoID(ctx, id, schema.OpTaskGet, schema.TaskIDArgs{TaskID: task.TaskID}))
	if err != nil {
		t.Fatalf("repeated read: %v", err)
	}
	if !got.Equal(task) {
		t.Fatalf("repeated read got %+v, want %+v", got, task)
	}
	if s := second.Stats(); s.Duplicates != 1 || s.ReadsResent != 1 {
		t.Fatalf("stats %+v, want the read found a duplicate and sent again", s)
	}
}

package bus_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

func publishRequest(t *testing.T, js jetstream.JetStream, node, client, id string) (*jetstream.PubAck, error) {
	t.Helper()
	m := nats.NewMsg(schema.RequestSubject(node, client))
	m.Header.Set(schema.HeaderReplyTo, "_INBOX."+client)
	m.Header.Set(nats.MsgIdHdr, id)
	m.Data = []byte(fmt.Sprintf(`{"op":"task.get","args":{"id":%q}}`, id))
	return js.PublishMsg(testCtx(t, 5*time.Second), m)
}

func depths(t *testing.T, st *bus.Store, node string) map[string]int {
	t.Helper()
	d, err := st.BufferDepths(testCtx(t, 5*time.Second), node)
	if err != nil {
		t.Fatalf("BufferDepths(%s): %v", node, err)
	}
	return d
}

func TestRequestBuffer(t *testing.T) {
	st := newStore(t, true)
	js := st.JetStream()
	ctx := testCtx(t, 30*time.Second)

	// 100 requests fill c1's buffer; the 101st is refused at publish time.
	for i := range 100 {
		if _, err := publishRequest(t, js, "n1", "c1", fmt.Sprintf("c1-%03d", i)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err := publishRequest(t, js, "n1", "c1", "c1-100")
	if err == nil {
		t.Fatal("101st request accepted into a full buffer")
	}
	if !strings.Contains(err.Error(), "maximum messages per subject") {
		t.Errorf("buffer full error %q does not say why", err)
	}
	// A retry of a buffered request is a duplicate, not a refusal.
	if ack, err := publishRequest(t, js, "n1", "c1", "c1-005"); err != nil || !ack.Duplicate {
		t.Errorf("duplicate request id: ack %+v, %v; want a duplicate ack", ack, err)
	}
	// Other clients and nodes have their own buffers.
	if _, err := publishRequest(t, js, "n1", "c2", "c2-000"); err != nil {
		t.Errorf("c2 refused while c1 is full: %v", err)
	}
	if _, err := publishRequest(t, js, "n2", "c1", "n2-c1-000"); err != nil {
		t.Errorf("n2/c1 refused while n1/c1 is full: %v", err)
	}
	if d := depths(t, st, "n1"); !maps.Equal(d, map[string]int{"c1": 100, "c2": 1}) {
		t.Errorf("BufferDepths(n1) = %v, want c1:100 c2:1", d)
	}
	if d := depths(t, st, "n2"); !maps.Equal(d, map[string]int{"c1": 1}) {
		t.Errorf("BufferDepths(n2) = %v, want c1:1", d)
	}
	if d := depths(t, st, "n3"); len(d) != 0 {
		t.Errorf("BufferDepths(n3) = %v, want empty", d)
	}

	// The worker gets them in order, with their headers.
	reqs, err := st.OpenRequests(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if reqs.Pending() != 101 {
		t.Errorf("Pending = %d, want 101", reqs.Pending())
	}
	var got []*bus.Request
	for range 101 {
		r, err := reqs.Next(testCtx(t, 5*time.Second))
		if err != nil {
			reqs.Stop()
			t.Fatalf("Next after %d: %v", len(got), err)
		}
		got = append(got, r)
	}
	for i, r := range got[:100] {
		want := fmt.Sprintf("c1-%03d", i)
		if r.RequestID != want || r.ClientID != "c1" || r.ReplyTo != "_INBOX.c1" || r.Delivered != 1 ||
			r.Subject != schema.RequestSubject("n1", "c1") || r.Published.IsZero() || !strings.Contains(string(r.Data), want) {
			t.Fatalf("request %d: %+v, want %s from c1", i, r, want)
		}
	}
	if got[100].ClientID != "c2" || got[100].RequestID != "c2-000" {
		t.Errorf("last request %+v, want c2-000", got[100])
	}
	// Handle the first 60, then the worker dies (Stop without acking the rest).
	for _, r := range got[:60] {
		if err := r.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	reqs.Stop()
	eventually(t, 5*time.Second, "acknowledged requests leave the buffer", func() bool {
		return depths(t, st, "n1")["c1"] == 40
	})
	// Room again for c1.
	if _, err := publishRequest(t, js, "n1", "c1", "c1-100"); err != nil {
		t.Errorf("request after the buffer drained: %v", err)
	}

	// A new worker gets the unacknowledged ones at once, not after the
	// 30 s ack wait, still in order, followed by the new one.
	start := time.Now()
	reqs2, err := st.OpenRequests(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer reqs2.Stop()
	if reqs2.Pending() != 42 {
		t.Errorf("Pending after reopen = %d, want 42", reqs2.Pending())
	}
	var want []string
	for i := 60; i < 100; i++ {
		want = append(want, fmt.Sprintf("c1-%03d", i))
	}
	want = append(want, "c2-000", "c1-100")
	for i, w := range want {
		r, err := reqs2.Next(testCtx(t, 5*time.Second))
		if err != nil {
			t.Fatalf("Next %d after reopen: %v", i, err)
		}
		if r.RequestID != w {
			t.Fatalf("request %d after reopen: %s, want %s", i, r.RequestID, w)
		}
		if err := r.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("redelivery took %s; it must not wait for the ack wait", d)
	}
	eventually(t, 5*time.Second, "buffer empty after acking everything", func() bool {
		return len(depths(t, st, "n1")) == 0
	})
	// n2's request was never touched by n1's consumer.
	if d := depths(t, st, "n2"); d["c1"] != 1 {
		t.Errorf("BufferDepths(n2) = %v after n1 drained", d)
	}
	// Another node's consumer runs alongside.
	reqs3, err := st.OpenRequests(ctx, "n2")
	if err != nil {
		t.Fatalf("OpenRequests(n2) while n1's is open: %v", err)
	}
	defer reqs3.Stop()
	r, err := reqs3.Next(testCtx(t, 5*time.Second))
	if err != nil || r.RequestID != "n2-c1-000" {
		t.Fatalf("n2 request: %+v, %v", r, err)
	}
}

func TestRequestsNextHonoursContext(t *testing.T) {
	st := newStore(t, true)
	reqs, err := st.OpenRequests(testCtx(t, 10*time.Second), "idle")
	if err != nil {
		t.Fatal(err)
	}
	defer reqs.Stop()
	if reqs.Pending() != 0 {
		t.Errorf("Pending = %d on an empty buffer", reqs.Pending())
	}
	start := time.Now()
	if _, err := reqs.Next(testCtx(t, 200*time.Millisecond)); err == nil {
		t.Fatal("Next on an empty buffer returned a request")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Next waited %s past its context", d)
	}
}

func TestOpenRequestsWithoutInit(t *testing.T) {
	st := newStore(t, false)
	if _, err := st.OpenRequests(testCtx(t, 5*time.Second), "n1"); err == nil {
		t.Error("OpenRequests without the stream succeeded")
	}
	if _, err := st.BufferDepths(testCtx(t, 5*time.Second), "n1"); err == nil {
		t.Error("BufferDepths without the stream succeeded")
	}
}

func TestStoreReply(t *testing.T) {
	st := newStore(t, false)
	sub, err := st.Conn().SubscribeSync("_INBOX.reply-test")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := st.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := st.Reply("_INBOX.reply-test", []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(2 * time.Second)
	if err != nil || string(m.Data) != `{"ok":true}` {
		t.Fatalf("reply %v, %v", m, err)
	}
}

// A request stream whose consumer the server drops (deleted, as a JetStream
// fault can do to a pull) goes on delivering: nats.go ends the iterator for
// good on "consumer deleted", and a worker's request pump then spun on
// ErrMsgIteratorClosed, serving no request, while the node answered healthy
// (found by the chaos suite: a buffered request applied two minutes late,
// by the next worker).
func TestRequestsResumeAfterTheirConsumerIsDeleted(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 30*time.Second)
	reqs, err := st.OpenRequests(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer reqs.Stop()
	if _, err := publishRequest(t, st.JetStream(), "n1", "c1", "r1"); err != nil {
		t.Fatal(err)
	}
	r, err := reqs.Next(ctx)
	if err != nil || r.RequestID != "r1" {
		t.Fatalf("first request: %+v, %v", r, err)
	}
	if err := r.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := st.JetStream().DeleteConsumer(ctx, schema.StreamRequests, "node-n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := publishRequest(t, st.JetStream(), "n1", "c1", "r2"); err != nil {
		t.Fatal(err)
	}
	// As the worker's pump does: errors are logged and Next called again.
	var errs []string
	for ctx.Err() == nil {
		r, err := reqs.Next(testCtx(t, 3*time.Second))
		switch {
		case err == nil && r.RequestID == "r1":
			// Its acknowledgement may not have reached the consumer before
			// it was deleted: delivered again, as a new worker would get it.
			_ = r.Ack()
			continue
		case err == nil && r.RequestID == "r2":
			t.Logf("r2 delivered after: %v", errs)
			return
		case err == nil:
			t.Fatalf("got %s, want r2", r.RequestID)
		}
		errs = append(errs, err.Error())
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("r2 never delivered once the consumer was deleted; Next said %v", errs)
}

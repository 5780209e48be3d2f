package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

type replayed struct {
	seq uint64
	op  string
}

func replayAll(t *testing.T, st *bus.Store, node string, after uint64) []replayed {
	t.Helper()
	var got []replayed
	n, err := st.Replay(testCtx(t, 10*time.Second), node, after, func(seq uint64, e *schema.JournalEntry) error {
		got = append(got, replayed{seq, e.Op})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%s, %d): %v", node, after, err)
	}
	if n != len(got) {
		t.Errorf("Replay returned %d, called fn %d times", n, len(got))
	}
	return got
}

func TestJournal(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 20*time.Second)

	// Two nodes append, interleaved, to the same stream.
	var n1, n2 []replayed
	var prev uint64
	for i := range 10 {
		for _, node := range []string{"n1", "n2"} {
			op := fmt.Sprintf("%s.op%d", node, i)
			seq, err := st.Append(ctx, node, "", &schema.JournalEntry{V: schema.JournalVersion, At: time.Now().UTC(), Op: op})
			if err != nil {
				t.Fatal(err)
			}
			if seq <= prev {
				t.Fatalf("Append returned %d after %d", seq, prev)
			}
			prev = seq
			if node == "n1" {
				n1 = append(n1, replayed{seq, op})
			} else {
				n2 = append(n2, replayed{seq, op})
			}
		}
	}
	if last, err := st.LastSeq(ctx, "n1"); err != nil || last != n1[9].seq {
		t.Errorf("LastSeq(n1) = %d, %v; want %d", last, err, n1[9].seq)
	}
	if last, err := st.LastSeq(ctx, "nobody"); err != nil || last != 0 {
		t.Errorf("LastSeq(nobody) = %d, %v; want 0", last, err)
	}

	t.Run("replay", func(t *testing.T) {
		tests := []struct {
			name  string
			after uint64
			want  []replayed
		}{
			{"from the start", 0, n1},
			{"after the first", n1[0].seq, n1[1:]},
			{"after a middle one", n1[4].seq, n1[5:]},
			{"after another node's entry", n2[4].seq, n1[5:]}, // n2[4] lies between n1[4] and n1[5]
			{"after the last", n1[9].seq, nil},
			{"beyond the end", n1[9].seq + 100, nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := replayAll(t, st, "n1", tc.after); !slices.Equal(got, tc.want) {
					t.Errorf("Replay(after %d) = %v, want %v", tc.after, got, tc.want)
				}
			})
		}
		if got := replayAll(t, st, "nobody", 0); len(got) != 0 {
			t.Errorf("Replay of an empty journal = %v", got)
		}
	})

	t.Run("fn error stops replay", func(t *testing.T) {
		stop := errors.New("stop")
		calls := 0
		n, err := st.Replay(ctx, "n1", 0, func(uint64, *schema.JournalEntry) error {
			calls++
			if calls == 3 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != 3 || n != 2 {
			t.Errorf("Replay = %d, %v after %d calls; want 2, stop, 3", n, err, calls)
		}
	})

	t.Run("dedupe", func(t *testing.T) {
		e := &schema.JournalEntry{V: schema.JournalVersion, Op: "dedupe.once", RequestID: "r-1"}
		s1, err := st.Append(ctx, "dd", "msg-1", e)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := st.Append(ctx, "dd", "msg-1", e)
		if !errors.Is(err, bus.ErrJournalDuplicate) {
			t.Fatalf("retried Append: %v, want ErrJournalDuplicate", err)
		}
		if s1 != s2 {
			t.Errorf("retried Append returned %d, first %d", s2, s1)
		}
		s3, err := st.Append(ctx, "dd", "msg-2", e)
		if err != nil || s3 <= s1 {
			t.Errorf("Append with a new id = %d, %v", s3, err)
		}
		if got := replayAll(t, st, "dd", 0); len(got) != 2 || got[0].seq != s1 || got[1].seq != s3 {
			t.Errorf("journal holds %v, want entries %d and %d", got, s1, s3)
		}
	})

	t.Run("compact", func(t *testing.T) {
		if err := st.Compact(ctx, "n1", 0); err != nil {
			t.Fatalf("Compact(0): %v", err)
		}
		if got := replayAll(t, st, "n1", 0); !slices.Equal(got, n1) {
			t.Fatalf("Compact(0) removed entries: %v", got)
		}
		if err := st.Compact(ctx, "n1", n1[3].seq); err != nil {
			t.Fatal(err)
		}
		if got := replayAll(t, st, "n1", 0); !slices.Equal(got, n1[4:]) {
			t.Errorf("after Compact through %d: %v, want %v", n1[3].seq, got, n1[4:])
		}
		// The other node's entries, also older, are untouched.
		if got := replayAll(t, st, "n2", 0); !slices.Equal(got, n2) {
			t.Errorf("n2 after compacting n1: %v, want %v", got, n2)
		}
		// Replay from before the compaction point starts at the oldest kept.
		if got := replayAll(t, st, "n1", n1[1].seq); !slices.Equal(got, n1[4:]) {
			t.Errorf("Replay after a compacted seq = %v", got)
		}
		// Compacting through the last entry empties the node's journal.
		if err := st.Compact(ctx, "n1", n1[9].seq); err != nil {
			t.Fatal(err)
		}
		if got := replayAll(t, st, "n1", 0); len(got) != 0 {
			t.Errorf("after compacting everything: %v", got)
		}
		if last, err := st.LastSeq(ctx, "n1"); err != nil || last != 0 {
			t.Errorf("LastSeq after compacting everything = %d, %v", last, err)
		}
		if got := replayAll(t, st, "n2", 0); !slices.Equal(got, n2) {
			t.Errorf("n2 after compacting all of n1: %v", got)
		}
		// New appends after compaction continue the sequence.
		seq, err := st.Append(ctx, "n1", "", &schema.JournalEntry{V: schema.JournalVersion, Op: "after"})
		if err != nil || seq <= n1[9].seq {
			t.Fatalf("Append after compaction = %d, %v", seq, err)
		}
		if got := replayAll(t, st, "n1", 0); !slices.Equal(got, []replayed{{seq, "after"}}) {
			t.Errorf("Replay after compaction and append = %v", got)
		}
	})

	t.Run("corrupt entry", func(t *testing.T) {
		if _, err := st.JetStream().Publish(ctx, schema.JournalSubject("bad"), []byte("not json")); err != nil {
			t.Fatal(err)
		}
		_, err := st.Replay(ctx, "bad", 0, func(uint64, *schema.JournalEntry) error { return nil })
		if !errors.Is(err, &schema.Error{Code: schema.CodeStateCorruption}) {
			t.Errorf("Replay of garbage = %v, want STATE_CORRUPTION", err)
		}
	})
}

func TestJournalManyEntries(t *testing.T) {
	// More entries than one Replay fetch batch (4096).
	if testing.Short() {
		t.Skip("slow-ish under -short")
	}
	st := newStore(t, true)
	ctx := testCtx(t, 60*time.Second)
	const n = 5000
	entry, _ := json.Marshal(&schema.JournalEntry{V: schema.JournalVersion, Op: "bulk"})
	js := st.JetStream()
	// Publish asynchronously for speed; Append is tested above.
	for i := range n {
		if _, err := js.PublishAsync(schema.JournalSubject("bulk"), entry); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i%1000 == 999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				t.Fatal("async publishes not acknowledged")
			}
		}
	}
	got := replayAll(t, st, "bulk", 0)
	if len(got) != n {
		t.Fatalf("replayed %d entries, want %d", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i].seq <= got[i-1].seq {
			t.Fatalf("out of order at %d: %d after %d", i, got[i].seq, got[i-1].seq)
		}
	}
	if got := replayAll(t, st, "bulk", got[n-10].seq); len(got) != 9 {
		t.Errorf("replay of the tail: %d entries, want 9", len(got))
	}
}

func TestSnapshots(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 20*time.Second)
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	put := func(node, id string, at time.Time, seq uint64) *schema.Snapshot {
		t.Helper()
		state := &schema.State{ConfigVersion: "cfg-" + id, Tasks: []schema.Task{{TaskID: "t-" + id, Title: "x",
			Status: schema.TaskPending, CreatedAt: at, UpdatedAt: at}}}
		snap, err := schema.NewSnapshot(node, id, "manual", at, seq, state, schema.CurrentSchemaVersion)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.PutSnapshot(ctx, snap, 1, 0)
		if err != nil {
			t.Fatalf("PutSnapshot %s/%s: %v", node, id, err)
		}
		if info.Checksum != snap.Checksum || info.JournalSeq != seq || info.SizeBytes <= 0 || info.StoredBytes <= 0 {
			t.Errorf("info %+v", info)
		}
		return snap
	}
	s1 := put("n1", "snap-1", base, 10)
	put("n1", "snap-2", base.Add(time.Minute), 20)
	put("n2", "snap-x", base.Add(2*time.Minute), 5)

	got, err := st.GetSnapshot(ctx, "n1", "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Checksum != s1.Checksum || got.JournalSeq != 10 || got.Verify() != nil {
		t.Errorf("read back %+v", got)
	}
	state, _, err := got.State()
	if err != nil || state.ConfigVersion != "cfg-snap-1" || len(state.Tasks) != 1 {
		t.Errorf("state %+v, %v", state, err)
	}

	list, err := st.ListSnapshots(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, s := range list {
		ids = append(ids, s.SnapshotID)
		if s.Index != i+1 || s.NodeID != "n1" || s.Tasks != 1 {
			t.Errorf("entry %d: %+v", i, s)
		}
	}
	if !slices.Equal(ids, []string{"snap-2", "snap-1"}) {
		t.Errorf("ListSnapshots(n1) = %v, want newest first [snap-2 snap-1]", ids)
	}
	if err := st.DeleteSnapshot(ctx, "n1", "snap-2"); err != nil {
		t.Fatal(err)
	}
	list, err = st.ListSnapshots(ctx, "n1")
	if err != nil || len(list) != 1 || list[0].SnapshotID != "snap-1" {
		t.Errorf("after delete: %+v, %v", list, err)
	}
	if _, err := st.GetSnapshot(ctx, "n1", "snap-2"); !errors.Is(err, &schema.Error{Code: schema.CodeNotFound}) {
		t.Errorf("deleted snapshot: %v, want NOT_FOUND", err)
	}
	if list, err := st.ListSnapshots(ctx, "nobody"); err != nil || len(list) != 0 {
		t.Errorf("ListSnapshots(nobody) = %v, %v", list, err)
	}
}

func TestEventsReadSubject(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 10*time.Second)
	subj := schema.NodeEventSubject("n1", schema.EventRestartResult)
	for i := range 3 {
		if err := st.PublishDurable(ctx, subj, map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PublishDurable(ctx, schema.NodeEventSubject("n2", schema.EventRestartResult), map[string]int{"i": 99}); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := st.ReadSubject(ctx, schema.StreamEvents, subj, func(data []byte) error {
		got = append(got, string(data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{`{"i":0}`, `{"i":1}`, `{"i":2}`}; !slices.Equal(got, want) {
		t.Errorf("ReadSubject = %v, want %v", got, want)
	}
	// A wildcard: every node's, in order, among 3,000 messages of another
	// event (a sparse subject in a busy stream, read in several batches).
	for i := range 3000 {
		if err := st.Publish(schema.NodeEventSubject("n3", "job_step"), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PublishDurable(ctx, schema.NodeEventSubject("n3", schema.EventRestartResult), map[string]int{"i": 100}); err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := st.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject("*", schema.EventRestartResult), func(data []byte) error {
		got = append(got, string(data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{`{"i":0}`, `{"i":1}`, `{"i":2}`, `{"i":99}`, `{"i":100}`}; !slices.Equal(got, want) {
		t.Errorf("ReadSubject with a wildcard = %v, want %v", got, want)
	}
	steps := 0
	if err := st.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject("*", "job_step"), func([]byte) error {
		steps++
		return nil
	}); err != nil || steps != 3000 {
		t.Errorf("ReadSubject of 3,000 messages: %d read, %v", steps, err)
	}
	called := false
	if err := st.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject("empty", "x"), func([]byte) error {
		called = true
		return nil
	}); err != nil || called {
		t.Errorf("ReadSubject of an empty subject: %v, called=%v", err, called)
	}
	// A subject no stream captures fails to publish durably.
	if err := st.PublishDurable(context.Background(), "not.captured", 1); err == nil {
		t.Error("PublishDurable to an uncaptured subject succeeded")
	}
}

// TestReadsLeaveNoConsumers: a stream takes at most 1,000 consumers, so
// reads made over and over (cluster health reads the history on every call)
// must not leave theirs behind (found by the chaos suite).
func TestReadsLeaveNoConsumers(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 60*time.Second)
	subj := schema.NodeEventSubject("n1", schema.EventRestartResult)
	if err := st.PublishDurable(ctx, subj, map[string]int{"i": 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 1100 {
		n := 0
		if err := st.ReadSubject(ctx, schema.StreamEvents, subj, func([]byte) error { n++; return nil }); err != nil || n != 1 {
			t.Fatalf("read %d: %v, %d messages", i, err, n)
		}
	}
	s, err := st.JetStream().Stream(ctx, schema.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on %s after the reads", info.State.Consumers, schema.StreamEvents)
	}
}

// Keep rides a stream that does not answer yet (here: not created yet, as
// during an election nothing answers either), and keeps a message once even
// when it is kept again under the same id (a retry of a try that landed).
func TestKeepRetriesUntilStoredAndStoresOnce(t *testing.T) {
	st := newStore(t, false)
	ctx := testCtx(t, 30*time.Second)
	const subj = "orch.v1.alert.critical.circuit_breaker"
	alert := map[string]any{"alert_id": "a-1", "kind": "circuit_breaker"}

	kept := make(chan error, 1)
	go func() { kept <- st.Keep(ctx, subj, "a-1", alert) }()
	time.Sleep(400 * time.Millisecond)
	select {
	case err := <-kept:
		t.Fatalf("Keep returned %v before any stream could store it", err)
	default:
	}
	if err := bus.Init(ctx, st.JetStream(), bus.DefaultStoreConfig()); err != nil {
		t.Fatal(err)
	}
	if err := <-kept; err != nil {
		t.Fatalf("Keep after the stream came: %v", err)
	}
	if err := st.Keep(ctx, subj, "a-1", alert); err != nil {
		t.Fatal(err)
	}
	if err := st.Keep(ctx, subj, "a-2", alert); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := st.ReadSubject(ctx, schema.StreamAlerts, subj, func(data []byte) error {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		ids = append(ids, fmt.Sprint(m["alert_id"]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 {
		t.Fatalf("stored %d messages (%v), want 2: a-1 once (kept twice under one id) and a-2", len(ids), ids)
	}

	// A context that ends first: the error says what JetStream last answered.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := st.Keep(short, "orch.v1.nostream.here", "x", alert)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last answer") {
		t.Fatalf("Keep to a subject no stream holds, for 2 s: %v; want the deadline and JetStream's last answer", err)
	}
}

// A read whose connection closes under it (a coordinator killed, a node
// stopping) ends with an error. nats.go's ordered consumer makes a new
// server-side consumer for each fetch and, left to its default, tries that
// again and again, forever, whatever the read's context says: a coordinator
// killed in the middle of a read could never return from Run.
func TestReadAllEndsWhenItsConnectionCloses(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 30*time.Second)
	for range 1100 { // more than one fetch (1,024) takes
		if _, err := st.Append(ctx, "n1", "", &schema.JournalEntry{V: schema.JournalVersion, At: time.Now().UTC(), Op: "op"}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		read := 0
		done <- st.ReadSubject(ctx, schema.StreamJournal, schema.JournalSubject("n1"), func([]byte) error {
			if read++; read == 1 {
				st.Conn().Close()
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a read whose connection closed succeeded")
		}
		t.Logf("read whose connection closed: %v", err)
	case <-time.After(20 * time.Second): // one try at a consumer takes at most 10 s
		t.Fatal("a read whose connection closed did not return")
	}
}

// TestPublishDurableOnceStoresAnEffectOnce: the same idempotency key twice
// (a retry of a try that landed, or the effect made again) is stored once;
// another key is stored.
func TestPublishDurableOnceStoresAnEffectOnce(t *testing.T) {
	st := newStore(t, true)
	ctx := testCtx(t, 30*time.Second)
	subj := schema.NodeEventSubject("n1", schema.EventJobStep)
	for i, key := range []string{"n1:jobstep:t1:1", "n1:jobstep:t1:1", "n1:jobstep:t1:2"} {
		if err := st.PublishDurableOnce(ctx, subj, key, map[string]int{"try": i}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if err := st.ReadSubject(ctx, schema.StreamEvents, subj, func(data []byte) error {
		got = append(got, string(data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{`{"try":0}`, `{"try":2}`}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

package chaos

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

func pausedAt(d time.Duration, reason string) schema.RollStatus {
	since := at(d)
	return schema.RollStatus{State: schema.RollPaused, PausedReason: reason, PausedSince: &since}
}

func TestPausedTooLong(t *testing.T) {
	s := time.Second
	cases := []struct {
		name      string
		st        schema.RollStatus
		firstSeen time.Time
		now       time.Time
		want      bool
	}{
		{"running", schema.RollStatus{State: schema.RollRunning}, at(0), at(5 * time.Minute), false},
		{"paused 59 s", pausedAt(0, schema.PausedNodeFailed), at(0), at(59 * s), false},
		{"paused exactly the limit", pausedAt(0, schema.PausedNodeFailed), at(0), at(60 * s), false},
		{"paused 61 s", pausedAt(0, schema.PausedNodeFailed), at(0), at(61 * s), true},
		{"an operator's pause too", pausedAt(0, schema.PausedOperator), at(0), at(61 * s), true},
		// The coordinator knows when the pause began; the harness may
		// have seen it late.
		{"paused_since before the harness saw it", pausedAt(0, schema.PausedBreaker), at(50 * s), at(61 * s), true},
		{"no paused_since: from first seen", schema.RollStatus{State: schema.RollPaused}, at(10 * s), at(61 * s), false},
		{"no paused_since: seen 61 s", schema.RollStatus{State: schema.RollPaused}, at(0), at(61 * s), true},
		{"no time at all", schema.RollStatus{State: schema.RollPaused}, time.Time{}, at(time.Hour), false},
		{"aborted", schema.RollStatus{State: schema.RollAborted}, at(0), at(time.Hour), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := pausedTooLong(tc.st, tc.firstSeen, tc.now, rollPauseLimit); got != tc.want {
				t.Errorf("pausedTooLong = %v, want %v", got, tc.want)
			}
		})
	}
}

func running() schema.RollStatus { return schema.RollStatus{State: schema.RollRunning} }

// A new roll is due the roll interval after the last one ended, not after
// it started, and never while one is under way.
func TestRollBookStartsAfterTheLastEnded(t *testing.T) {
	s := time.Second
	b := newRollBook(10*s, at(0))
	if b.due(at(9 * s)) {
		t.Fatal("due 9 s into the run, want the first roll after 10 s")
	}
	if !b.due(at(10 * s)) {
		t.Fatal("not due 10 s into the run")
	}
	id := b.nextID()
	b.startAnswered(id, running(), nil, at(10*s))
	for _, d := range []time.Duration{11 * s, 40 * s, 5 * time.Minute} {
		b.statusSeen(running(), nil, at(d))
		if b.due(at(d)) {
			t.Fatalf("due at %s while %s runs", d, id)
		}
	}
	b.statusSeen(schema.RollStatus{State: schema.RollCompleted}, nil, at(300*s))
	if b.due(at(309 * s)) {
		t.Error("due 9 s after the roll ended")
	}
	if !b.due(at(310 * s)) {
		t.Error("not due 10 s after the roll ended")
	}
	if got := b.started(); !slices.Equal(got, []string{id}) {
		t.Errorf("started %v, want [%s]", got, id)
	}
	if c, p, r, a := b.counts(); c != 1 || p != 0 || r != 0 || a != 0 {
		t.Errorf("counts completed/paused/resumed/aborted = %d/%d/%d/%d, want 1/0/0/0", c, p, r, a)
	}
}

func TestRollBookIDsAreUnique(t *testing.T) {
	b := newRollBook(time.Second, at(0))
	seen := map[string]bool{}
	for range 100 {
		id := b.nextID()
		if seen[id] || !schema.ValidToken(id) {
			t.Fatalf("roll id %q repeated or not a valid token", id)
		}
		seen[id] = true
	}
	if other := newRollBook(time.Second, at(time.Hour)).nextID(); seen[other] {
		t.Errorf("a later run's first roll id %q is one of this run's", other)
	}
}

// A refused start is counted by code and tried again soon; a start that
// reached no coordinator is a refusal too (certainly not made).
func TestRollBookRefusals(t *testing.T) {
	s := time.Second
	b := newRollBook(10*s, at(0))
	b.startAnswered(b.nextID(), schema.RollStatus{}, schema.Errorf(schema.CodeNotLeader, "no leader"), at(10*s))
	b.startAnswered(b.nextID(), schema.RollStatus{}, schema.Errorf(schema.CodeSystemNotReady, "node down"), at(13*s))
	b.startAnswered(b.nextID(), schema.RollStatus{}, fmt.Errorf("%w on x", bus.ErrNoResponders), at(16*s))
	want := map[string]int{"NOT_LEADER": 1, "SYSTEM_NOT_READY": 1, "NO_RESPONDERS": 1}
	if fmt.Sprint(b.refuse) != fmt.Sprint(want) {
		t.Errorf("refusals %v, want %v", b.refuse, want)
	}
	if b.current != nil || len(b.started()) != 0 || b.unanswered != 0 {
		t.Errorf("after refusals: current %v, started %v, unanswered %d; want none", b.current, b.started(), b.unanswered)
	}
	if b.due(at(17 * s)) {
		t.Error("due 1 s after a refusal")
	}
	if !b.due(at(16*s + rollRetry)) {
		t.Error("not due the retry interval after a refusal")
	}
}

// A start answered late (a timeout) may have made a roll: the harness keeps
// its id, starts no other, and asks roll.status until it knows.
func TestRollBookUnansweredStart(t *testing.T) {
	s := time.Second
	timeout := fmt.Errorf("%w: roll.start", bus.ErrTimeout)
	notFound := schema.Errorf(schema.CodeNotFound, "no roll")

	t.Run("found started", func(t *testing.T) {
		b := newRollBook(10*s, at(0))
		id := b.nextID()
		b.startAnswered(id, schema.RollStatus{}, timeout, at(30*s))
		if b.unanswered != 1 || len(b.started()) != 0 || b.due(at(time.Hour)) {
			t.Fatalf("unanswered %d, started %v, due %v; want 1, none, false", b.unanswered, b.started(), b.due(at(time.Hour)))
		}
		// Not found yet: the start may still be on its way to a leader.
		b.statusSeen(schema.RollStatus{}, notFound, at(32*s))
		b.statusSeen(schema.RollStatus{}, errors.New("timeout"), at(45*s))
		if b.current == nil || b.due(at(46*s)) {
			t.Fatal("gave up on an unanswered start too soon")
		}
		b.statusSeen(running(), nil, at(46*s))
		if got := b.started(); !slices.Equal(got, []string{id}) {
			t.Errorf("started %v, want [%s]", got, id)
		}
		if len(b.lost) != 0 {
			t.Errorf("lost %v, want none", b.lost)
		}
	})
	t.Run("never made", func(t *testing.T) {
		b := newRollBook(10*s, at(0))
		id := b.nextID()
		b.startAnswered(id, schema.RollStatus{}, timeout, at(30*s))
		b.statusSeen(schema.RollStatus{}, notFound, at(30*s+rollLostAfter))
		if b.current != nil || !slices.Equal(b.lost, []string{id}) || len(b.started()) != 0 {
			t.Fatalf("current %v, lost %v, started %v; want none, [%s], none", b.current, b.lost, b.started(), id)
		}
		// The last roll ended long ago: start another at once.
		if !b.due(at(30*s + rollLostAfter)) {
			t.Error("not due after a start found never made")
		}
		// Made after all (found at the end, or while a roll runs that
		// the harness does not know): adopted, counted.
		b.adopt(id, running(), at(2*time.Minute))
		if !slices.Equal(b.started(), []string{id}) || len(b.lost) != 0 || b.current == nil {
			t.Errorf("after adopt: started %v, lost %v, current %v; want [%s], none, it", b.started(), b.lost, b.current, id)
		}
	})
}

// A roll paused past the limit is aborted by the harness, once; a pause the
// coordinator resumes is counted as paused and resumed, not aborted.
func TestRollBookPauses(t *testing.T) {
	s := time.Second
	t.Run("resumed by the coordinator", func(t *testing.T) {
		b := newRollBook(10*s, at(0))
		b.startAnswered(b.nextID(), running(), nil, at(10*s))
		if b.statusSeen(pausedAt(20*s, schema.PausedNodeFailed), nil, at(21*s)) {
			t.Fatal("aborted a roll paused 1 s")
		}
		b.statusSeen(schema.RollStatus{State: schema.RollRunning, AutoResumes: 1}, nil, at(30*s))
		b.statusSeen(schema.RollStatus{State: schema.RollCompleted, AutoResumes: 1}, nil, at(60*s))
		if c, p, r, a := b.counts(); c != 1 || p != 1 || r != 1 || a != 0 {
			t.Errorf("counts completed/paused/resumed/aborted = %d/%d/%d/%d, want 1/1/1/0", c, p, r, a)
		}
	})
	t.Run("a pause the harness never saw", func(t *testing.T) {
		// Paused and resumed between two polls: auto_resumes tells.
		b := newRollBook(10*s, at(0))
		b.startAnswered(b.nextID(), running(), nil, at(10*s))
		b.statusSeen(schema.RollStatus{State: schema.RollCompleted, AutoResumes: 2}, nil, at(60*s))
		if c, p, r, a := b.counts(); c != 1 || p != 1 || r != 2 || a != 0 {
			t.Errorf("counts completed/paused/resumed/aborted = %d/%d/%d/%d, want 1/1/2/0", c, p, r, a)
		}
	})
	t.Run("stuck", func(t *testing.T) {
		b := newRollBook(10*s, at(0))
		b.startAnswered(b.nextID(), running(), nil, at(10*s))
		st := pausedAt(20*s, schema.PausedQuarantine)
		for _, d := range []time.Duration{21 * s, 50 * s, 80 * s} {
			if b.statusSeen(st, nil, at(d)) {
				t.Fatalf("aborted at %s, paused since 20 s", d)
			}
		}
		if !b.statusSeen(st, nil, at(81*s)) {
			t.Fatal("not aborted 61 s into its pause")
		}
		b.current.abortAsked = true // the abort was sent (roller.abort)
		if b.statusSeen(st, nil, at(82*s)) {
			t.Error("asked to abort again after the abort was sent")
		}
		if b.due(at(83 * s)) {
			t.Error("due before the aborted roll is seen ended")
		}
		b.statusSeen(schema.RollStatus{State: schema.RollAborted}, nil, at(83*s))
		if !b.due(at(93 * s)) {
			t.Error("not due the roll interval after the abort")
		}
		if c, p, r, a := b.counts(); c != 0 || p != 1 || r != 0 || a != 1 {
			t.Errorf("counts completed/paused/resumed/aborted = %d/%d/%d/%d, want 0/1/0/1", c, p, r, a)
		}
	})
}

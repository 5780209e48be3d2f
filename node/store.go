package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// Journal keeps every effect durably, in order, per node.
type Journal interface {
	Append(ctx context.Context, nodeID, msgID string, e *schema.JournalEntry) (seq uint64, err error)
	AppendBatch(ctx context.Context, nodeID string, msgIDs []string, entries []*schema.JournalEntry) (lastSeq uint64, err error)
	Replay(ctx context.Context, nodeID string, afterSeq uint64, fn func(seq uint64, e *schema.JournalEntry) error) (int, error)
	LastSeq(ctx context.Context, nodeID string) (uint64, error)
	Compact(ctx context.Context, nodeID string, throughSeq uint64) error
}

var _ Journal = (*bus.Store)(nil)

// store is the worker's state: tasks, sessions and kept replies. Every
// change is written to the journal before anything about it leaves the
// worker (a reply, an acknowledgement, a job step).
//
// Lock order: commitMu, then mu (then worker.mu). commitMu is held from the
// moment effects are applied in memory until the journal has them, so a
// snapshot (which takes commitMu) never sees an effect the journal lacks,
// and lastSeq is exactly the journal position of the state in memory.
type store struct {
	nodeID  string
	journal Journal

	commitMu sync.Mutex

	mu       sync.Mutex
	tasks    map[string]*schema.Task
	sessions map[string]*schema.Session
	replies  map[string]keptReply
	taskVer  map[string]uint64 // bumped on every change of a task
	lastSeq  uint64
	written  int // journal writes since start

	pending atomic.Int32 // journal writes issued and not yet acknowledged
}

// keptReply is a kept reply with what it said about which task, so a
// snapshot can keep it by reference while the task has not changed since.
type keptReply struct {
	schema.KeptReply
	taskID string
	ver    uint64
}

func newStore(nodeID string, j Journal) *store {
	return &store{nodeID: nodeID, journal: j, tasks: map[string]*schema.Task{},
		sessions: map[string]*schema.Session{}, replies: map[string]keptReply{}, taskVer: map[string]uint64{}}
}

// load replaces the state with a snapshot's. bodies, when not nil, holds
// the kept replies stored by task reference already built (from
// schema.Snapshot.StateAndReplies, the same bytes schema.TaskReplyBody
// gives, made from the snapshot's own bytes on every core): building them
// here one by one encoded each task twice, which for 10,000 tasks took
// longer than the rest of a restart. They keep their task reference, so
// the next snapshot stores them by reference again.
func (s *store) load(st *schema.State, bodies [][]byte, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks = make(map[string]*schema.Task, len(st.Tasks))
	s.taskVer = make(map[string]uint64, len(st.Tasks))
	for i := range st.Tasks {
		t := st.Tasks[i]
		s.tasks[t.TaskID] = &t
		s.taskVer[t.TaskID] = 1
	}
	s.sessions = make(map[string]*schema.Session, len(st.Sessions))
	for i := range st.Sessions {
		x := st.Sessions[i]
		s.sessions[x.SessionID] = &x
	}
	s.replies = make(map[string]keptReply, len(st.Replies))
	for i, r := range st.Replies {
		kr := keptReply{KeptReply: r}
		if r.TaskRef != "" {
			if i < len(bodies) && bodies[i] != nil {
				kr.Reply, kr.taskID, kr.ver = bodies[i], r.TaskRef, 1
			} else if t, ok := s.tasks[r.TaskRef]; ok {
				kr.Reply, kr.taskID, kr.ver = schema.TaskReplyBody(r.RequestID, t, nil), r.TaskRef, 1
			}
			kr.TaskRef = ""
		}
		s.replies[r.RequestID] = kr // the last reply kept under a request id is the one kept
	}
	s.lastSeq = seq
}

// apply an entry to memory (mu held, or during replay before serving). seq
// is its journal sequence, 0 while it is not written yet.
func (s *store) apply(seq uint64, e *schema.JournalEntry) {
	if e.Task != nil {
		t := *e.Task
		s.tasks[t.TaskID] = &t
		s.taskVer[t.TaskID]++
	}
	if e.Session != nil {
		x := *e.Session
		s.sessions[x.SessionID] = &x
	}
	if e.ExpiredSession != "" {
		delete(s.sessions, e.ExpiredSession)
	}
	if e.RequestID != "" && e.Reply != nil {
		kr := keptReply{KeptReply: schema.KeptReply{RequestID: e.RequestID, ClientID: e.ClientID, Reply: e.Reply, At: e.At}}
		if e.Task != nil {
			kr.taskID, kr.ver = e.Task.TaskID, s.taskVer[e.Task.TaskID]
		}
		s.replies[e.RequestID] = kr
	}
	if seq > s.lastSeq {
		s.lastSeq = seq
	}
}

func stamp(e *schema.JournalEntry) {
	e.V = schema.JournalVersion
	if e.At.IsZero() {
		e.At = stateNow()
	}
}

// commitLocked journals one entry and then applies it; commitMu and mu must
// be held. msgID makes a retry after a lost acknowledgement safe.
func (s *store) commitLocked(ctx context.Context, msgID string, e *schema.JournalEntry) error {
	stamp(e)
	s.pending.Add(1)
	defer s.pending.Add(-1)
	var seq uint64
	err := retryJournal(ctx, func() error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		seq, err = s.journal.Append(actx, s.nodeID, msgID, e)
		if errors.Is(err, bus.ErrJournalDuplicate) {
			// A job step's checkpoint: stored already (by a try of ours or
			// by the worker before, whose step this one ran again), with
			// the same effect.
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	s.apply(seq, e)
	s.written++
	return nil
}

// stage applies an entry in memory ahead of its batch's commit (commitMu
// and mu held), so later requests of the batch see it.
func (s *store) stage(e *schema.JournalEntry) {
	stamp(e)
	s.apply(0, e)
}

// commitBatch writes the staged entries atomically (commitMu held, mu not).
// It retries while NATS is away; a retry after a lost acknowledgement is
// recognised by the message ids. An error means memory is ahead of the
// journal: the caller must not let anything out and must give up the worker.
func (s *store) commitBatch(ctx context.Context, msgIDs []string, entries []*schema.JournalEntry) error {
	s.pending.Add(int32(len(entries)))
	defer s.pending.Add(-int32(len(entries)))
	var seq uint64
	tried := false
	err := retryJournal(ctx, func() error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		seq, err = s.journal.AppendBatch(actx, s.nodeID, msgIDs, entries)
		if errors.Is(err, bus.ErrJournalDuplicate) {
			if tried {
				return nil // our earlier try landed; only its acknowledgement was lost
			}
			// Stored before we ever tried: by the worker before this one,
			// whose batch landed after this one restored. The journal holds
			// its effects (other task ids, its replies), not ours: give up
			// the worker, and the next one restores them and answers with
			// the kept replies (found by the chaos suite: acknowledged tasks
			// that no restore could find).
			return backoff.Permanent(fmt.Errorf("%w: written by an earlier worker after this one restored", err))
		}
		tried = true
		return err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if seq > s.lastSeq {
		s.lastSeq = seq
	}
	s.written += len(entries)
	s.mu.Unlock()
	return nil
}

// export copies the state (canonically ordered) and the journal sequence it
// corresponds to, pruning replies older than keep.
func (s *store) export(keep time.Duration, configVersion string) (*schema.State, uint64) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := time.Now().Add(-keep)
	st := &schema.State{ConfigVersion: configVersion, Tasks: make([]schema.Task, 0, len(s.tasks)),
		Sessions: make([]schema.Session, 0, len(s.sessions)), Replies: make([]schema.KeptReply, 0, len(s.replies))}
	for _, t := range s.tasks {
		st.Tasks = append(st.Tasks, *t)
	}
	for _, x := range s.sessions {
		st.Sessions = append(st.Sessions, *x)
	}
	for id, r := range s.replies {
		if r.At.Before(cut) {
			delete(s.replies, id)
			continue
		}
		kr := r.KeptReply
		if r.taskID != "" && s.taskVer[r.taskID] == r.ver {
			// The reply was made from this very version of the task.
			kr.Reply, kr.TaskRef = nil, r.taskID
		}
		st.Replies = append(st.Replies, kr)
	}
	st.Canonical()
	return st, s.lastSeq
}

// keptReply returns the reply kept for a request id.
func (s *store) keptReply(id string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.replies[id]
	return r.Reply, ok
}

// retryJournal retries a journal write while NATS is unreachable (a server
// restart is ridden by the reconnect), until ctx ends.
func retryJournal(ctx context.Context, op func() error) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond), backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(0)), ctx)
	return backoff.Retry(func() error {
		err := op()
		if err != nil && !bus.Retryable(err) {
			return backoff.Permanent(err)
		}
		return err
	}, b)
}

func sortStrings(s []string) { slices.Sort(s) }

// stateNow is the time stamped on state: UTC, to the millisecond, so that
// every state schema (version 1 kept milliseconds) round-trips it exactly.
func stateNow() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

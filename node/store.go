package node

import (
	"context"
	"encoding/json"
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
	Replay(ctx context.Context, nodeID string, afterSeq uint64, fn func(seq uint64, e *schema.JournalEntry) error) (int, error)
	LastSeq(ctx context.Context, nodeID string) (uint64, error)
	Compact(ctx context.Context, nodeID string, throughSeq uint64) error
}

// store is the worker's state: tasks, sessions and kept replies, each change
// written to the journal before it is applied and acknowledged. mu is held
// across the journal write, so the journal's order is the order of effects
// and a snapshot taken under mu matches exactly the journal up to lastSeq.
type store struct {
	nodeID  string
	journal Journal

	mu       sync.Mutex
	tasks    map[string]*schema.Task
	sessions map[string]*schema.Session
	replies  map[string]keptReply
	taskSeq  map[string]uint64 // journal sequence of each task's last change
	lastSeq  uint64
	written  int // journal writes since start

	pending atomic.Int32 // journal writes issued and not yet acknowledged
}

// keptReply is a kept reply with what it said about which task, so a
// snapshot can keep it by reference while the task has not changed since.
type keptReply struct {
	schema.KeptReply
	taskID string
	seq    uint64
}

func newStore(nodeID string, j Journal) *store {
	return &store{nodeID: nodeID, journal: j, tasks: map[string]*schema.Task{},
		sessions: map[string]*schema.Session{}, replies: map[string]keptReply{}, taskSeq: map[string]uint64{}}
}

// load replaces the state with a snapshot's.
func (s *store) load(st *schema.State, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks = make(map[string]*schema.Task, len(st.Tasks))
	s.taskSeq = make(map[string]uint64, len(st.Tasks))
	for i := range st.Tasks {
		t := st.Tasks[i]
		s.tasks[t.TaskID] = &t
		s.taskSeq[t.TaskID] = seq
	}
	s.sessions = make(map[string]*schema.Session, len(st.Sessions))
	for i := range st.Sessions {
		x := st.Sessions[i]
		s.sessions[x.SessionID] = &x
	}
	s.replies = make(map[string]keptReply, len(st.Replies))
	for _, r := range st.Replies {
		kr := keptReply{KeptReply: r}
		if r.TaskRef != "" {
			if t, ok := s.tasks[r.TaskRef]; ok {
				kr.Reply, kr.taskID, kr.seq = schema.TaskReplyBody(r.RequestID, t, nil), r.TaskRef, seq
			}
			kr.TaskRef = ""
		}
		s.replies[r.RequestID] = kr
	}
	s.lastSeq = seq
}

// apply an entry to memory (mu held, or during replay before serving).
func (s *store) apply(seq uint64, e *schema.JournalEntry) {
	if e.Task != nil {
		t := *e.Task
		s.tasks[t.TaskID] = &t
		s.taskSeq[t.TaskID] = seq
	}
	if e.Session != nil {
		x := *e.Session
		s.sessions[x.SessionID] = &x
	}
	if e.RequestID != "" && e.Reply != nil {
		kr := keptReply{KeptReply: schema.KeptReply{RequestID: e.RequestID, ClientID: e.ClientID, Reply: e.Reply, At: e.At}, seq: seq}
		if e.Task != nil {
			kr.taskID = e.Task.TaskID
		}
		s.replies[e.RequestID] = kr
	}
	if seq > s.lastSeq {
		s.lastSeq = seq
	}
}

// commitLocked journals e and then applies it; mu must be held. msgID
// makes a retry after a lost acknowledgement safe.
func (s *store) commitLocked(ctx context.Context, msgID string, e *schema.JournalEntry) error {
	e.V = schema.JournalVersion
	if e.At.IsZero() {
		e.At = stateNow()
	}
	s.pending.Add(1)
	defer s.pending.Add(-1)
	var seq uint64
	err := retryJournal(ctx, func() error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		seq, err = s.journal.Append(actx, s.nodeID, msgID, e)
		return err
	})
	if err != nil {
		return err
	}
	s.apply(seq, e)
	s.written++
	return nil
}

// export copies the state (canonically ordered) and the journal sequence it
// corresponds to, pruning replies older than keep.
func (s *store) export(keep time.Duration, configVersion string) (*schema.State, uint64) {
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
		if r.taskID != "" && s.taskSeq[r.taskID] == r.seq {
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

package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// NodeState is what the coordinator keeps of a node across leader changes
// (ORCH_COORD key node.<id>): the ladder's facts.
type NodeState struct {
	Failures    int         `json:"failures"`
	LastAttempt time.Time   `json:"last_attempt,omitempty"`
	Level       int         `json:"level"`
	Degraded    bool        `json:"degraded"`
	Quarantined bool        `json:"quarantined"`
	Reason      string      `json:"reason,omitempty"`
	Restarts    []time.Time `json:"restarts,omitempty"`
	FreqAlerted time.Time   `json:"freq_alerted,omitempty"` // no longer written: restart_frequency is an alert condition (alertcond_node.go)
	FailedAlert bool        `json:"failed_alert,omitempty"`
}

// rollRecord is a roll as kept in ORCH_COORD (key roll.<id>).
type rollRecord struct {
	ID        string               `json:"roll_id"`
	Request   schema.RollRequest   `json:"request"`
	Plan      Plan                 `json:"plan"`
	State     string               `json:"state"`
	Done      []string             `json:"done"`
	Current   map[string]time.Time `json:"current"`
	HealthyAt map[string]time.Time `json:"healthy_at"`
	Failed    map[string]string    `json:"failed"`
	Durations map[string]float64   `json:"durations"`
	StartedAt time.Time            `json:"started_at"`
	UpdatedAt time.Time            `json:"updated_at"`
	Message   string               `json:"message,omitempty"`
	Term      uint64               `json:"term"`

	// The pause, while paused: why (schema.Paused*), since when, the node
	// that caused it (if one did), and since when each failed node has
	// been healthy (the automatic resume's clock, kept here so that a new
	// leader does not start it again).
	PausedReason string               `json:"paused_reason,omitempty"`
	PausedSince  time.Time            `json:"paused_since,omitzero"`
	PausedNode   string               `json:"paused_node,omitempty"`
	RecoveredAt  map[string]time.Time `json:"recovered_at,omitempty"`
	AutoResumes  int                  `json:"auto_resumes,omitempty"`
	// Retries counts each node's failed tries: its restart id changes
	// with each (restartID).
	Retries map[string]int `json:"retries,omitempty"`
	rev     uint64
}

// stateStore keeps the coordinator's state in ORCH_COORD. Node states are
// cached, written through: the leader reads every node's ladder state on
// every pass, and only it writes them; the cache is dropped whenever
// leadership changes hands, so a new leader starts from the bucket.
//
// Reads go to the bucket's leader (bus.KVGet): a direct get may come from a
// replica that lags, and a new leader that took a stale ladder state, roll
// or breaker for the truth would write it back over the newer one.
type stateStore struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	mu     *sync.Mutex
	nodes  map[string]NodeState
	leader *atomic.Bool // only the leader (the only writer) uses the cache
	// alerts are the alert conditions open (alertcond.go), kept under
	// alertsKey; forgotten, like the cache, when leadership changes hands.
	alerts *openConditions
}

func newStateStore(js jetstream.JetStream, kv jetstream.KeyValue) stateStore {
	return stateStore{kv: kv, js: js, mu: &sync.Mutex{}, nodes: map[string]NodeState{}, leader: &atomic.Bool{},
		alerts: &openConditions{}}
}

// get reads key from the bucket's leader: its value and revision. While
// the bucket elects a leader nobody answers, where a replica would have
// answered stale: the read is tried again for up to stateReadWithin, so a
// roll's status asked during an election waits instead of failing
// (found by the chaos suite: a roll's status answered INTERNAL with
// JetStream's 503).
func (s stateStore) get(ctx context.Context, key string) (value []byte, rev uint64, err error) {
	err = bus.RetryTransient(ctx, stateReadWithin, nil, func() error {
		value, rev, err = bus.KVGet(ctx, s.js, schema.BucketCoord, key)
		return err
	})
	return value, rev, err
}

// stateReadWithin bounds get's tries: a JetStream election takes 0.3 s to
// a few seconds here.
const stateReadWithin = 5 * time.Second

// lead drops the cache and says whether this coordinator now leads.
func (s stateStore) lead(leader bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.nodes)
	s.alerts.reset()
	s.leader.Store(leader)
}

func (s stateStore) getNode(ctx context.Context, id string) (NodeState, uint64, error) {
	s.mu.Lock()
	if ns, ok := s.nodes[id]; ok && s.leader.Load() {
		s.mu.Unlock()
		return ns, 0, nil
	}
	s.mu.Unlock()
	var ns NodeState
	value, rev, err := s.get(ctx, "node."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.remember(id, ns)
		return ns, 0, nil
	}
	if err != nil {
		return ns, 0, err
	}
	if err := json.Unmarshal(value, &ns); err != nil {
		return ns, 0, err
	}
	s.remember(id, ns)
	return ns, rev, nil
}

func (s stateStore) remember(id string, ns NodeState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader.Load() {
		s.nodes[id] = ns
	}
}

func (s stateStore) putNode(ctx context.Context, id string, ns NodeState) error {
	data, _ := json.Marshal(ns)
	if _, err := s.kv.Put(ctx, "node."+id, data); err != nil {
		s.mu.Lock()
		delete(s.nodes, id)
		s.mu.Unlock()
		return err
	}
	s.remember(id, ns)
	return nil
}

func (s stateStore) deleteNode(ctx context.Context, id string) error {
	s.mu.Lock()
	delete(s.nodes, id)
	s.mu.Unlock()
	err := s.kv.Delete(ctx, "node."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

func (s stateStore) getRoll(ctx context.Context, id string) (*rollRecord, error) {
	value, rev, err := s.get(ctx, "roll."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, schema.Errorf(schema.CodeNotFound, "no roll %s", id)
	}
	if err != nil {
		return nil, err
	}
	var r rollRecord
	if err := json.Unmarshal(value, &r); err != nil {
		return nil, err
	}
	r.rev = rev
	return &r, nil
}

// putRoll writes a roll with compare-and-set on its revision, so two
// coordinators never both move it.
func (s stateStore) putRoll(ctx context.Context, r *rollRecord) error {
	r.UpdatedAt = time.Now().UTC()
	data, _ := json.Marshal(r)
	var rev uint64
	var err error
	if r.rev == 0 {
		rev, err = s.kv.Create(ctx, "roll."+r.ID, data)
	} else {
		rev, err = s.kv.Update(ctx, "roll."+r.ID, data, r.rev)
	}
	if err != nil {
		return err
	}
	r.rev = rev
	return nil
}

func (s stateStore) rolls(ctx context.Context) ([]*rollRecord, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []*rollRecord
	for k := range keys.Keys() {
		if len(k) > 5 && k[:5] == "roll." {
			if r, err := s.getRoll(ctx, k[5:]); err == nil {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func (s stateStore) breaker(ctx context.Context) (schema.BreakerState, error) {
	var b schema.BreakerState
	value, _, err := s.get(ctx, "breaker")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return b, nil
	}
	if err != nil {
		return b, err
	}
	return b, json.Unmarshal(value, &b)
}

func (s stateStore) putBreaker(ctx context.Context, b schema.BreakerState) error {
	data, _ := json.Marshal(b)
	_, err := s.kv.Put(ctx, "breaker", data)
	return err
}

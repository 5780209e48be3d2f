package coordinator

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// NodeView is the coordinator's view of one node.
type NodeView struct {
	Info          schema.NodeInfo
	LastHeartbeat time.Time
	Heartbeat     schema.Heartbeat
	// Failed: declared failed (missed heartbeats and an unanswered health
	// request); counted unavailable, never restarted.
	Failed         bool
	FailedAt       time.Time
	HealthySince   time.Time
	UnhealthySince time.Time
	// Restarts are the node's restarts seen in the last hours (any cause).
	Restarts []time.Time
}

// membership keeps the registry (ORCH_NODES) and heartbeats in view.
type membership struct {
	mu      sync.Mutex
	nodes   map[string]*NodeView
	lastAny time.Time // the last heartbeat from any node
	// recovered: nodes this coordinator had declared failed that were
	// heard again, for the leader's next pass to record (node_recovered),
	// so the report can end their downtime.
	recovered []recovery
}

// recovery is a node declared failed at FailedAt and heard again at At.
type recovery struct {
	NodeID   string
	FailedAt time.Time
	At       time.Time
}

// clearFailed un-fails v on news from it (held: mu).
func (m *membership) clearFailed(v *NodeView, now time.Time) {
	if v.Failed && len(m.recovered) < 10000 {
		m.recovered = append(m.recovered, recovery{NodeID: v.Info.NodeID, FailedAt: v.FailedAt, At: now})
	}
	v.Failed = false
}

// takeRecovered returns and forgets the recoveries seen since the last call.
func (m *membership) takeRecovered() []recovery {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.recovered
	m.recovered = nil
	return out
}

func newMembership() *membership { return &membership{nodes: map[string]*NodeView{}} }

// watchRegistry follows ORCH_NODES: nodes joining, leaving, forgotten.
func (m *membership) watchRegistry(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // initial values delivered
				}
				m.registry(e)
			}
		}
	}()
	return nil
}

func (m *membership) registry(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(m.nodes, e.Key())
		return
	}
	var info schema.NodeInfo
	if json.Unmarshal(e.Value(), &info) != nil || !schema.ValidToken(info.NodeID) {
		return
	}
	v := m.nodes[info.NodeID]
	if v == nil {
		v = &NodeView{}
		m.nodes[info.NodeID] = v
	}
	v.Info = info
}

// heartbeat records one heartbeat.
func (m *membership) heartbeat(msg *nats.Msg) {
	var hb schema.Heartbeat
	if json.Unmarshal(msg.Data, &hb) != nil || !schema.ValidToken(hb.NodeID) {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.nodes[hb.NodeID]
	if v == nil {
		// Heartbeats before the registry entry: keep what they say.
		v = &NodeView{Info: schema.NodeInfo{NodeID: hb.NodeID, Group: hb.Group, Priority: hb.Priority, Version: hb.Version}}
		m.nodes[hb.NodeID] = v
	}
	if hb.Healthy && (v.HealthySince.IsZero() || !v.Heartbeat.Healthy) {
		v.HealthySince = now
	}
	if !hb.Healthy {
		if v.Heartbeat.Healthy || v.UnhealthySince.IsZero() {
			v.UnhealthySince = now
		}
		v.HealthySince = time.Time{}
	}
	m.clearFailed(v, now)
	v.LastHeartbeat, v.Heartbeat = now, hb
	m.lastAny = now
}

// lastHeard is when the last heartbeat from any node arrived (zero: none yet).
func (m *membership) lastHeard() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastAny
}

// restarted records a node's restart result (for the frequency alert).
func (m *membership) restarted(msg *nats.Msg) {
	var r schema.RestartResult
	if json.Unmarshal(msg.Data, &r) != nil || !schema.ValidToken(r.NodeID) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.nodes[r.NodeID]
	if v == nil {
		return
	}
	cut := time.Now().Add(-2 * time.Hour)
	kept := v.Restarts[:0]
	for _, t := range v.Restarts {
		if t.After(cut) {
			kept = append(kept, t)
		}
	}
	v.Restarts = append(kept, r.CompletedAt)
}

// observe records what a health answer says, as a heartbeat would.
func (m *membership) observe(id string, h schema.Health) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.nodes[id]
	if v == nil {
		return
	}
	now := time.Now()
	if h.Healthy && (v.HealthySince.IsZero() || !v.Heartbeat.Healthy) {
		v.HealthySince = now
	}
	if !h.Healthy { // as heartbeat does: how long it has been unhealthy (health_check_failed)
		if v.Heartbeat.Healthy || v.UnhealthySince.IsZero() {
			v.UnhealthySince = now
		}
	}
	v.Heartbeat.Healthy, v.Heartbeat.Phase, v.Heartbeat.WorkerPID = h.Healthy, h.Phase, h.WorkerPID
	m.clearFailed(v, now)
	v.LastHeartbeat = now
}

// snapshot copies the views, sorted by id.
func (m *membership) snapshot() []NodeView {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]NodeView, 0, len(m.nodes))
	for _, v := range m.nodes {
		c := *v
		c.Restarts = slices.Clone(v.Restarts)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b NodeView) int { return strings.Compare(a.Info.NodeID, b.Info.NodeID) })
	return out
}

func (m *membership) get(id string) (NodeView, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.nodes[id]
	if !ok {
		return NodeView{}, false
	}
	return *v, true
}

// suspects lists nodes that missed `missed` heartbeats and are not yet failed.
func (m *membership) suspects(interval time.Duration, missed int, now time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id, v := range m.nodes {
		if !v.Failed && !v.LastHeartbeat.IsZero() && now.Sub(v.LastHeartbeat) > time.Duration(missed)*interval {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (m *membership) markFailed(id string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.nodes[id]
	if !ok || v.Failed {
		return false
	}
	v.Failed, v.FailedAt = true, now
	return true
}

// forget drops a node from the view (decommissioned).
func (m *membership) forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nodes, id)
}

// member turns a view into the planner's Member, given the live flag.
func (v NodeView) member(answeringWindow time.Duration, now time.Time) Member {
	answering := !v.Failed && !v.LastHeartbeat.IsZero() && now.Sub(v.LastHeartbeat) <= answeringWindow
	return Member{ID: v.Info.NodeID, Group: v.Info.Group, Priority: v.Info.Priority,
		Healthy: answering && v.Heartbeat.Healthy, Answering: answering,
		Restarting: answering && restarting(v.Heartbeat.Phase)}
}

// restarting: a restart is under way (not idle, and not its end state).
func restarting(p schema.Phase) bool {
	switch p {
	case "", schema.PhaseIdle, schema.PhaseComplete, schema.PhaseFailed:
		return false
	}
	return true
}

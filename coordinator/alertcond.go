package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// Alert conditions. Every condition the leader alerts on fires once when
// it begins and is resolved once when it clears: a receiver grouping
// alerts by fingerprint (kind and node, or roll) opens one incident per
// episode and closes it. The conditions open are kept in ORCH_COORD (key
// alertsKey), so the next leader neither raises again what is open nor
// forgets to resolve it.

// Defaults of the Config fields that say when conditions are looked at.
const (
	DefaultUnhealthyAlertAfter = 5 * time.Minute
	DefaultSLOWindow           = 7 * 24 * time.Hour
	DefaultMaintenanceEvery    = 30 * time.Second
)

// Why a node's health_check_failed is open (details "reason").
const (
	HealthDeclaredFailed = "declared_failed" // silent, then no answer to health
	HealthUnhealthy      = "unhealthy"       // answering, unhealthy for UnhealthyAlertAfter
)

// alertsKey is the ORCH_COORD key of the conditions open;
// conditionsReadWithin bounds a pass's read of it (tried again by the next).
const (
	alertsKey            = "alerts.open"
	conditionsReadWithin = time.Second
)

// condition is one open condition: its kind and what it is about (node,
// roll: the alert's fingerprint), why (health_check_failed's reason) and
// since when.
type condition struct {
	Kind   string    `json:"kind"`
	Node   string    `json:"node,omitempty"`
	Roll   string    `json:"roll,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

func (k condition) key() string { return k.Kind + "/" + k.Node + "/" + k.Roll }

// openConditions are the conditions open, as this leader knows them: read
// from ORCH_COORD when it starts to lead (a read that fails is tried again
// by the next pass; what was raised meanwhile is kept), written after each
// change (one that fails is written again by the next change or pass).
// Only the leader's passes and actions change them.
type openConditions struct {
	saveMu sync.Mutex // one write at a time, each of the newest conditions
	mu     sync.Mutex
	open   map[string]condition
	loaded bool // read from ORCH_COORD in this term
	dirty  bool // changed since the last write that succeeded
	// brkClosings: the breaker's closings when breakerAlert last looked
	// (brkSeen: it has looked in this term).
	brkClosings uint64
	brkSeen     bool
}

// reset forgets them: leadership changed hands.
func (o *openConditions) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.open, o.loaded, o.dirty, o.brkSeen = nil, false, false, false
}

// ready reads the conditions if this term has not yet, and writes them if
// the last write failed; it reports whether they are known.
func (c *Coordinator) conditionsReady(ctx context.Context) bool {
	o := c.state.alerts
	o.mu.Lock()
	loaded, dirty := o.loaded, o.dirty
	o.mu.Unlock()
	if !loaded {
		rctx, cancel := context.WithTimeout(ctx, conditionsReadWithin)
		stored, err := c.state.openConditions(rctx)
		cancel()
		if err != nil {
			return false
		}
		o.mu.Lock()
		if o.open == nil {
			o.open = map[string]condition{}
		}
		for k, cd := range stored {
			if _, ok := o.open[k]; !ok {
				o.open[k] = cd
			}
		}
		// Raised before the read (a declaration of failure): written back.
		o.loaded, dirty = true, o.dirty || len(o.open) != len(stored)
		o.mu.Unlock()
	}
	if dirty {
		c.saveConditions(ctx)
	}
	return true
}

// saveConditions writes the conditions open, while this coordinator leads.
func (c *Coordinator) saveConditions(ctx context.Context) {
	if !c.state.leader.Load() {
		return
	}
	o := c.state.alerts
	o.saveMu.Lock()
	defer o.saveMu.Unlock()
	o.mu.Lock()
	snapshot := maps.Clone(o.open)
	o.mu.Unlock()
	err := c.state.putOpenConditions(ctx, snapshot)
	o.mu.Lock()
	o.dirty = err != nil
	o.mu.Unlock()
	if err != nil {
		c.log.Warn("alert conditions not stored; tried again by the next pass", "err", err)
	}
}

// isOpen returns the open condition of kind about node and roll.
func (c *Coordinator) isOpen(kind, node, roll string) (condition, bool) {
	o := c.state.alerts
	o.mu.Lock()
	defer o.mu.Unlock()
	cd, ok := o.open[condition{Kind: kind, Node: node, Roll: roll}.key()]
	return cd, ok
}

// openWhere lists the open conditions that match.
func (c *Coordinator) openWhere(match func(condition) bool) []condition {
	o := c.state.alerts
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []condition
	for _, cd := range o.open {
		if match(cd) {
			out = append(out, cd)
		}
	}
	return out
}

// setCondition records cd open (or, with open false, closed) and reports
// whether that changed anything; the change is written at once.
func (c *Coordinator) setCondition(ctx context.Context, cd condition, open bool) bool {
	o := c.state.alerts
	o.mu.Lock()
	k := cd.key()
	prev, was := o.open[k]
	switch {
	case open && was && prev.Reason == cd.Reason, !open && !was:
		o.mu.Unlock()
		return false
	case open:
		if o.open == nil {
			o.open = map[string]condition{}
		}
		if was {
			cd.Since = prev.Since
		}
		o.open[k] = cd
	default:
		delete(o.open, k)
	}
	o.dirty = true
	loaded := o.loaded
	o.mu.Unlock()
	if loaded {
		c.saveConditions(ctx)
	}
	return true
}

// raise fires the condition of kind about node (and roll, for a roll's
// condition) unless it is open already. build makes the alert's message
// and details; it is called only when the alert is sent. The roll's id is
// added to the details (the alert's fingerprint names the roll when it
// names no node).
func (c *Coordinator) raise(ctx context.Context, kind, node, roll string, build func() (string, map[string]any)) {
	c.conditionsReady(ctx) // not read yet (JetStream not answering): raised all the same, kept in memory
	if _, open := c.isOpen(kind, node, roll); open {
		return
	}
	if !c.setCondition(ctx, condition{Kind: kind, Node: node, Roll: roll, Since: time.Now().UTC()}, true) {
		return
	}
	msg, details := build()
	c.alert(schema.AlertKinds[kind], kind, node, msg, withRoll(details, roll))
}

// settle resolves the condition of kind about node (and roll) if it is
// open; build makes the resolved alert's message and details, called only
// then. Conditions not read from ORCH_COORD yet are left for a later pass.
func (c *Coordinator) settle(ctx context.Context, kind, node, roll string, build func() (string, map[string]any)) {
	if !c.conditionsReady(ctx) {
		return
	}
	cd, open := c.isOpen(kind, node, roll)
	if !open || !c.setCondition(ctx, cd, false) {
		return
	}
	msg, details := build()
	if details == nil {
		details = map[string]any{}
	}
	details["open_seconds"] = schema.Secs(time.Since(cd.Since))
	c.resolve(kind, node, msg, withRoll(details, roll))
}

// track raises the condition while holds, and settles it otherwise.
func (c *Coordinator) track(ctx context.Context, holds bool, kind, node string, build func() (string, map[string]any)) {
	if holds {
		c.raise(ctx, kind, node, "", build)
	} else {
		c.settle(ctx, kind, node, "", build)
	}
}

func withRoll(details map[string]any, roll string) map[string]any {
	if roll == "" {
		return details
	}
	if details == nil {
		details = map[string]any{}
	}
	details["roll_id"] = roll
	return details
}

// openConditions reads the conditions open from ORCH_COORD (none stored:
// none open).
func (s stateStore) openConditions(ctx context.Context) (map[string]condition, error) {
	value, _, err := s.get(ctx, alertsKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return map[string]condition{}, nil
	}
	if err != nil {
		return nil, err
	}
	var list []condition
	if err := json.Unmarshal(value, &list); err != nil {
		return nil, err
	}
	out := make(map[string]condition, len(list))
	for _, cd := range list {
		out[cd.key()] = cd
	}
	return out, nil
}

// putOpenConditions writes the conditions open to ORCH_COORD.
func (s stateStore) putOpenConditions(ctx context.Context, open map[string]condition) error {
	list := make([]condition, 0, len(open))
	for _, k := range sortedKeys(open) {
		list = append(list, open[k])
	}
	data, _ := json.Marshal(list)
	_, err := s.kv.Put(ctx, alertsKey, data)
	return err
}

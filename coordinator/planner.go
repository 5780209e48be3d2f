package coordinator

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Member is what the planner knows of one node.
type Member struct {
	ID       string
	Group    string
	Priority int
	// Healthy: the node reports healthy now.
	Healthy bool
	// Answering: the supervisor answers at all (heartbeats, health).
	Answering bool
	// Quarantined nodes are never restarted automatically.
	Quarantined bool
	// Restarting: a restart not started by this roll is under way (an
	// operator's, say): the node counts as unavailable.
	Restarting bool
}

// unavailable: the node is not serving right now.
func (m Member) unavailable() bool { return !m.Healthy || !m.Answering || m.Restarting }

// Selector picks a roll's nodes: a group, an explicit list, or both (the
// list filtered to the group).
type Selector struct {
	Group string
	Nodes []string
}

// RollPolicy is a roll's budget and pacing.
type RollPolicy struct {
	MaxUnavailable  int           // at most this many selected nodes out at once (>= 1)
	Canary          int           // the first N nodes alone, before the rest
	MinHealthyTime  time.Duration // a restarted node must stay healthy this long before its slot frees
	HealthyDeadline time.Duration // a node not healthy by then pauses the roll
}

// DefaultRollPolicy is the contract's defaults.
func DefaultRollPolicy() RollPolicy {
	return RollPolicy{MaxUnavailable: 1, MinHealthyTime: 5 * time.Second, HealthyDeadline: 60 * time.Second}
}

// Validate checks the policy.
func (p RollPolicy) Validate() error {
	var errs []error
	if p.MaxUnavailable < 1 {
		errs = append(errs, fmt.Errorf("max_unavailable must be >= 1, got %d", p.MaxUnavailable))
	}
	if p.Canary < 0 {
		errs = append(errs, fmt.Errorf("canary must be >= 0, got %d", p.Canary))
	}
	if p.MinHealthyTime < 0 || p.HealthyDeadline <= 0 {
		errs = append(errs, errors.New("min_healthy_time must be >= 0 and healthy_deadline > 0"))
	}
	return errors.Join(errs...)
}

// ErrEmptySelection is returned when a selector matches no node.
var ErrEmptySelection = errors.New("coordinator: the selection matches no node")

// Select returns the selected members in roll order: priority (lowest
// first: a node that leads something is given a high number and goes
// last), then id. Unknown ids in the list are an error.
func Select(members []Member, sel Selector) ([]Member, error) {
	if sel.Group == "" && len(sel.Nodes) == 0 {
		return nil, errors.New("coordinator: a selector needs a group or nodes")
	}
	byID := make(map[string]Member, len(members))
	for _, m := range members {
		byID[m.ID] = m
	}
	var out []Member
	if len(sel.Nodes) > 0 {
		seen := map[string]bool{}
		for _, id := range sel.Nodes {
			m, ok := byID[id]
			if !ok {
				return nil, fmt.Errorf("coordinator: unknown node %q", id)
			}
			if seen[id] || (sel.Group != "" && m.Group != sel.Group) {
				continue
			}
			seen[id] = true
			out = append(out, m)
		}
	} else {
		for _, m := range members {
			if m.Group == sel.Group {
				out = append(out, m)
			}
		}
	}
	if len(out) == 0 {
		return nil, ErrEmptySelection
	}
	slices.SortFunc(out, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Plan is a roll's static plan: waves of at most MaxUnavailable nodes, the
// canary wave first, quarantined nodes left out.
type Plan struct {
	Waves   [][]string
	Skipped []string // quarantined: not restarted
}

// MakePlan orders the selection into waves and says what would block the
// roll from starting now.
func MakePlan(members []Member, sel Selector, p RollPolicy) (Plan, []string, error) {
	if err := p.Validate(); err != nil {
		return Plan{}, nil, err
	}
	selected, err := Select(members, sel)
	if err != nil {
		return Plan{}, nil, err
	}
	var plan Plan
	var order []string
	for _, m := range selected {
		if m.Quarantined {
			plan.Skipped = append(plan.Skipped, m.ID)
			continue
		}
		order = append(order, m.ID)
	}
	canary := min(p.Canary, len(order))
	if canary > 0 {
		plan.Waves = append(plan.Waves, slices.Clone(order[:canary]))
	}
	for rest := order[canary:]; len(rest) > 0; {
		n := min(p.MaxUnavailable, len(rest))
		plan.Waves = append(plan.Waves, slices.Clone(rest[:n]))
		rest = rest[n:]
	}
	var blocked []string
	if out := unavailableIDs(selected); len(out) >= p.MaxUnavailable {
		blocked = append(blocked, fmt.Sprintf("disruption budget used up: %d of %d selected nodes already unavailable (%v)",
			len(out), p.MaxUnavailable, out))
	}
	if len(order) == 0 {
		blocked = append(blocked, "every selected node is quarantined")
	}
	return plan, blocked, nil
}

func unavailableIDs(ms []Member) []string {
	var out []string
	for _, m := range ms {
		if m.unavailable() {
			out = append(out, m.ID)
		}
	}
	return out
}

// Progress is where a roll stands, as the executor keeps it.
type Progress struct {
	Done map[string]bool // restarted and healthy for MinHealthyTime
	// Current holds the nodes this roll has taken out, with when their
	// restart began (the executor's permit holders).
	Current map[string]time.Time
	Failed  map[string]bool
}

// Step is the planner's answer: which nodes to start restarting now.
type Step struct {
	Start  []string
	Reason string
}

// Next says which nodes a roll may take out now: the next nodes of the
// order that are not done, failed or current, as many as the budget allows
// once every selected node that is unavailable (current ones, and those an
// operator or a failure took out) is counted. During the canary, only
// canary nodes. It is a pure function of its arguments.
func Next(selected []Member, plan Plan, p RollPolicy, pr Progress) Step {
	if len(pr.Failed) > 0 {
		return Step{Reason: "paused: a node failed to become healthy"}
	}
	out := 0
	for _, m := range selected {
		if _, cur := pr.Current[m.ID]; cur || m.unavailable() {
			out++
		}
	}
	room := p.MaxUnavailable - out
	if room <= 0 {
		return Step{Reason: fmt.Sprintf("budget: %d of %d unavailable", out, p.MaxUnavailable)}
	}
	state := map[string]Member{}
	for _, m := range selected {
		state[m.ID] = m
	}
	var order []string
	for _, w := range plan.Waves {
		order = append(order, w...)
	}
	canary := 0
	if p.Canary > 0 && len(plan.Waves) > 0 {
		canary = len(plan.Waves[0])
	}
	var start []string
	for i, id := range order {
		if pr.Done[id] || pr.Failed[id] {
			continue
		}
		if _, cur := pr.Current[id]; cur {
			if i < canary {
				return Step{Start: start, Reason: "canary in progress"}
			}
			continue
		}
		if i >= canary && canary > 0 && !allDone(order[:canary], pr.Done) {
			break
		}
		m, ok := state[id]
		if !ok || m.Quarantined || m.unavailable() {
			// Gone, quarantined or already down: the executor decides; never
			// restart a node that is not answering.
			continue
		}
		start = append(start, id)
		if len(start) == room {
			break
		}
	}
	if len(start) == 0 {
		return Step{Reason: "waiting"}
	}
	return Step{Start: start, Reason: fmt.Sprintf("%d of %d budget free", room, p.MaxUnavailable)}
}

func allDone(ids []string, done map[string]bool) bool {
	for _, id := range ids {
		if !done[id] {
			return false
		}
	}
	return true
}

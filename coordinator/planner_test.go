package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func genFleet(t *rapid.T) ([]Member, RollPolicy) {
	n := rapid.IntRange(1, 25).Draw(t, "nodes")
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{
			ID:          fmt.Sprintf("n%02d", i),
			Group:       rapid.SampledFrom([]string{"a", "b"}).Draw(t, "group"),
			Priority:    rapid.IntRange(0, 4).Draw(t, "priority"),
			Healthy:     rapid.Float64Range(0, 1).Draw(t, "h") > 0.2,
			Answering:   rapid.Float64Range(0, 1).Draw(t, "a") > 0.1,
			Quarantined: rapid.Float64Range(0, 1).Draw(t, "q") > 0.9,
		}
	}
	p := DefaultRollPolicy()
	p.MaxUnavailable = rapid.IntRange(1, 4).Draw(t, "max_unavailable")
	p.Canary = rapid.IntRange(0, 3).Draw(t, "canary")
	return ms, p
}

// For any fleet, health pattern (changing over time) and budget: no step
// takes the selection over its budget, no node is restarted twice, every
// selected node that is not quarantined is restarted exactly once.
func TestPlannerProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		fleet, p := genFleet(t)
		group := rapid.SampledFrom([]string{"a", "b"}).Draw(t, "selected group")
		plan, _, err := MakePlan(fleet, Selector{Group: group}, p)
		if err != nil {
			if err == ErrEmptySelection {
				return
			}
			t.Fatal(err)
		}
		pr := Progress{Done: map[string]bool{}, Current: map[string]time.Time{}, Failed: map[string]bool{}}
		started := map[string]int{}
		finishAt := map[string]int{}
		clock := time.Unix(0, 0)
		for tick := 0; tick < 400; tick++ {
			clock = clock.Add(time.Second)
			// The world changes: nodes the roll is not restarting fail and recover
			// on their own, until the end, when everything recovers.
			for i := range fleet {
				if _, cur := pr.Current[fleet[i].ID]; cur {
					continue
				}
				if tick > 300 {
					fleet[i].Healthy, fleet[i].Answering = true, true
				} else if rapid.Float64Range(0, 1).Draw(t, "flip") < 0.05 {
					fleet[i].Healthy = !fleet[i].Healthy
				}
			}
			selected, _ := Select(fleet, Selector{Group: group})
			out := 0
			for _, m := range selected {
				if _, cur := pr.Current[m.ID]; cur || m.unavailable() {
					out++
				}
			}
			step := Next(selected, plan, p, pr)
			if len(step.Start) > 0 && out+len(step.Start) > p.MaxUnavailable {
				t.Fatalf("tick %d: %d unavailable + %d started > budget %d", tick, out, len(step.Start), p.MaxUnavailable)
			}
			for _, id := range step.Start {
				started[id]++
				if started[id] > 1 {
					t.Fatalf("node %s restarted twice", id)
				}
				pr.Current[id] = clock
				finishAt[id] = tick + rapid.IntRange(1, 5).Draw(t, "restart ticks")
			}
			for id := range pr.Current {
				if tick >= finishAt[id] {
					delete(pr.Current, id)
					pr.Done[id] = true
				}
			}
		}
		for _, w := range plan.Waves {
			for _, id := range w {
				if started[id] != 1 {
					t.Fatalf("node %s restarted %d times, want exactly once (plan %v)", id, started[id], plan.Waves)
				}
			}
		}
		for _, id := range plan.Skipped {
			if started[id] != 0 {
				t.Fatalf("quarantined node %s was restarted", id)
			}
		}
	})
}

// With every node healthy the roll restarts nodes in priority order (then
// id), the canary alone first, waves never larger than the budget.
func TestPlannerOrderAndWaves(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		fleet, p := genFleet(t)
		for i := range fleet {
			fleet[i].Healthy, fleet[i].Answering, fleet[i].Group = true, true, "a"
		}
		plan, blocked, err := MakePlan(fleet, Selector{Group: "a"}, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(blocked) > 0 && len(plan.Skipped) < len(fleet) {
			t.Fatalf("a healthy fleet is blocked: %v", blocked)
		}
		for i, w := range plan.Waves {
			limit := p.MaxUnavailable
			if i == 0 && p.Canary > 0 {
				limit = p.Canary
			}
			if len(w) > limit || len(w) == 0 {
				t.Fatalf("wave %d has %d nodes (limit %d)", i, len(w), limit)
			}
		}
		selected, _ := Select(fleet, Selector{Group: "a"})
		pr := Progress{Done: map[string]bool{}, Current: map[string]time.Time{}}
		var order []string
		for len(order) < len(fleet)-len(plan.Skipped) {
			step := Next(selected, plan, p, pr)
			if len(step.Start) == 0 {
				t.Fatalf("stuck after %v: %s", order, step.Reason)
			}
			order = append(order, step.Start...)
			for _, id := range step.Start {
				pr.Done[id] = true
			}
		}
		prio := map[string]int{}
		for _, m := range fleet {
			prio[m.ID] = m.Priority
		}
		if !slices.IsSortedFunc(order, func(a, b string) int {
			if prio[a] != prio[b] {
				return prio[a] - prio[b]
			}
			if a < b {
				return -1
			}
			return 1
		}) {
			t.Fatalf("restart order %v does not follow priority then id", order)
		}
	})
}

func TestSelectAndPlanErrors(t *testing.T) {
	fleet := []Member{{ID: "a", Group: "g", Healthy: true, Answering: true}, {ID: "b", Group: "g", Answering: true}}
	cases := []struct {
		name string
		sel  Selector
		p    RollPolicy
		want string
	}{
		{"empty selector", Selector{}, DefaultRollPolicy(), "needs a group or nodes"},
		{"unknown node", Selector{Nodes: []string{"zz"}}, DefaultRollPolicy(), "unknown node"},
		{"unknown group", Selector{Group: "nope"}, DefaultRollPolicy(), "matches no node"},
		{"budget 0", Selector{Group: "g"}, RollPolicy{MaxUnavailable: 0, HealthyDeadline: time.Second}, "max_unavailable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := MakePlan(fleet, c.sel, c.p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	// b is already unhealthy: with a budget of 1 the plan says what blocks it.
	_, blocked, err := MakePlan(fleet, Selector{Group: "g"}, DefaultRollPolicy())
	if err != nil || len(blocked) != 1 || !strings.Contains(blocked[0], "budget") {
		t.Fatalf("blocked %v (%v)", blocked, err)
	}
}

package chaos

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var (
	testServers = []string{"nats-1", "nats-2", "nats-3"}
	testNodes   = []string{"node-1", "node-2", "node-3", "node-4", "node-5"}
)

func TestFaultPlanDrawsEveryKindEachRound(t *testing.T) {
	for _, kinds := range [][]string{Faults, {"partition-nats", "kill-nats"}, {"kill-leader"}} {
		for seed := uint64(0); seed < 20; seed++ {
			t.Run(fmt.Sprintf("%d kinds, seed %d", len(kinds), seed), func(t *testing.T) {
				p := newFaultPlan(seed, kinds)
				for round := range 3 {
					var got []string
					for range kinds {
						f := p.next(testServers, testNodes)
						got = append(got, f.kind)
						checkTarget(t, f)
					}
					slices.Sort(got)
					want := slices.Sorted(slices.Values(kinds))
					if !slices.Equal(got, want) {
						t.Errorf("round %d drew %v, want each of %v once", round, got, want)
					}
				}
			})
		}
	}
}

// checkTarget: a fault's target is of the kind it needs.
func checkTarget(t *testing.T, f plannedFault) {
	t.Helper()
	switch f.kind {
	case "kill-nats", "partition-nats":
		if !slices.Contains(testServers, f.target) {
			t.Errorf("%s on %q, want a server", f.kind, f.target)
		}
	case "kill-leader":
		if f.target != "" {
			t.Errorf("kill-leader on %q, want the leader found at injection", f.target)
		}
	default:
		if !slices.Contains(testNodes, f.target) {
			t.Errorf("%s on %q, want a node", f.kind, f.target)
		}
	}
}

// The seed fixes the schedule's content: the same seed draws the same
// faults, another seed another order, targets and holds.
func TestFaultPlanIsSeeded(t *testing.T) {
	draw := func(seed uint64) []plannedFault {
		p := newFaultPlan(seed, Faults)
		var out []plannedFault
		for range 3 * len(Faults) {
			out = append(out, p.next(testServers, testNodes))
		}
		return out
	}
	a, b, c := draw(7), draw(7), draw(8)
	if !slices.Equal(a, b) {
		t.Errorf("seed 7 drew two schedules:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 7 and 8 drew the same schedule %v", a)
	}
}

// simulated is a run of the schedule on a simulated clock.
type simulated struct {
	starts []time.Duration
	kinds  map[string]int
}

// simulate runs the schedule for d with faults drawn from seed, each taking
// busy (inject to recovered), as runSchedule does for Run.
func simulate(seed uint64, d time.Duration, busy func(plannedFault) time.Duration) simulated {
	s := simulated{kinds: map[string]int{}}
	plan := newFaultPlan(seed, Faults)
	var now time.Duration
	runSchedule(d, DefaultFaultEvery, DefaultFaultGap, func(due time.Duration) bool {
		now = max(now, due)
		return true
	}, func() time.Duration {
		f := plan.next(testServers, testNodes)
		s.starts = append(s.starts, now)
		s.kinds[f.kind]++
		now += busy(f)
		return now
	})
	return s
}

// When faults fit their slots the cadence alone sets when they start: the
// same times for every seed (faults that take no time, since holds alone,
// up to 8 s, overrun a 5-s slot now and then).
func TestFaultCadenceDoesNotDependOnTheSeed(t *testing.T) {
	var want []time.Duration
	for k := range 12 {
		want = append(want, time.Duration(k)*DefaultFaultEvery)
	}
	for _, seed := range []uint64{1, 7, 12345} {
		s := simulate(seed, time.Minute, func(plannedFault) time.Duration { return 0 })
		if !slices.Equal(s.starts, want) {
			t.Errorf("seed %d: faults at %v, want %v", seed, s.starts, want)
		}
	}
}

// A slow fault delays the next to gap after its recovery, and the ones
// after it catch up with the cadence.
func TestFaultDue(t *testing.T) {
	s := time.Second
	cases := []struct {
		name    string
		k       int
		prevEnd time.Duration
		want    time.Duration
	}{
		{"first", 0, -DefaultFaultGap, 0},
		{"on the cadence", 3, 12 * s, 15 * s},
		{"late: gap after the recovery", 3, 20 * s, 20*s + DefaultFaultGap},
		{"caught up", 5, 20 * s, 25 * s},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := faultDue(tc.k, DefaultFaultEvery, DefaultFaultGap, tc.prevEnd); got != tc.want {
				t.Errorf("faultDue(%d, prev end %s) = %s, want %s", tc.k, tc.prevEnd, got, tc.want)
			}
		})
	}
}

// Ten minutes inject at least 100 faults, every kind drawn, for any seed,
// with faults recovering as measured in docs/CHAOS.md (a little slower:
// means with their tails, not medians), kill-node as fast as the lease
// takeover makes it, and half a second of the harness's own checks a fault.
// It fails if the cadence, the gap or the hold times grow so that a run
// falls short.
func TestScheduleInjectsAHundredFaultsInTenMinutes(t *testing.T) {
	recovery := map[string]time.Duration{
		"kill-worker": 2500 * time.Millisecond, "kill-node": 3 * time.Second,
		"stop-worker": 2 * time.Second, "stop-node": 100 * time.Millisecond,
		"partition-node": 1200 * time.Millisecond, "partition-nats": 3 * time.Second,
		"kill-nats": 4500 * time.Millisecond, "kill-leader": 500 * time.Millisecond,
	}
	for _, k := range Faults {
		if _, ok := recovery[k]; !ok {
			t.Fatalf("no recovery time for kind %s", k)
		}
	}
	fewest := 1 << 30
	for seed := uint64(1); seed <= 50; seed++ {
		s := simulate(seed, 10*time.Minute, func(f plannedFault) time.Duration {
			return f.hold + recovery[f.kind] + 500*time.Millisecond
		})
		fewest = min(fewest, len(s.starts))
		if len(s.starts) < 100 {
			t.Errorf("seed %d: %d faults in 10 minutes, want at least 100", seed, len(s.starts))
		}
		for _, k := range Faults {
			if s.kinds[k] < 100/len(Faults)-1 {
				t.Errorf("seed %d: %d faults of kind %s, want about %d", seed, s.kinds[k], k, 100/len(Faults))
			}
		}
	}
	t.Logf("fewest faults in 10 minutes over 50 seeds: %d", fewest)
}

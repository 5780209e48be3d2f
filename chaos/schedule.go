package chaos

import (
	"math/rand/v2"
	"time"
)

// The fault schedule. What comes (kind, target, hold) is drawn from the
// seed; when it comes is not: faults are due on a fixed cadence, so a run's
// length fixes how many faults it injects, whatever the seed, as long as
// the faults recover in time (a run that falls behind catches up, a fixed
// gap after each recovery).

const (
	// DefaultFaultEvery is the cadence: fault k is due k×5 s after the run
	// began, 120 in 10 minutes if every fault recovered within its slot.
	// A round of the eight kinds holds them 17.5 s on average (holdTime)
	// and they recover in 14-17 s together (docs/CHAOS.md's figures, with
	// kill-node at the 1-3 s of the fast lease takeover): about 4.2-4.8 s
	// a fault with the harness's own checks, so a run is often a little
	// behind the cadence and catches up at the gap below, 105-115 faults
	// in 10 minutes (TestScheduleInjectsAHundredFaultsInTenMinutes).
	DefaultFaultEvery = 5 * time.Second
	// DefaultFaultGap is the least time from one fault's recovery to the
	// next fault: the system was just seen healthy (the recovery), so the
	// gap only keeps one fault's recovery from running into the next one's
	// injection; the shorter it is, the fewer faults a slow recovery costs.
	DefaultFaultGap = 500 * time.Millisecond
	// faultRecoveryWait bounds the wait for a fault's recovery (the worst
	// recovery measured is 25 s; the run's end allows 30 s after its last
	// heal): a fault that does not recover in it is reported as never
	// recovered, and the schedule goes on instead of losing a minute.
	faultRecoveryWait = 30 * time.Second
)

// runSchedule runs faults on the cadence until d has passed since the
// start: for fault k it waits until it is due (wait, which reports false
// when the run is cancelled), then runs it (fault, which draws it, injects,
// holds and heals it, waits for its recovery, and returns when it
// recovered, as time since the start). Run drives it with the clock, the
// tests with a simulated one.
func runSchedule(d, every, gap time.Duration, wait func(due time.Duration) bool, fault func() (end time.Duration)) {
	prevEnd := -gap
	for k := 0; ; k++ {
		due := faultDue(k, every, gap, prevEnd)
		if due >= d || !wait(due) {
			return
		}
		prevEnd = fault()
	}
}

// faultDue is when fault k (from 0) starts, measured from the run's start:
// on the cadence, but no sooner than gap after the previous fault recovered
// (prevEnd; negative before the first). It takes no seed: the cadence is
// the same for every schedule.
func faultDue(k int, every, gap, prevEnd time.Duration) time.Duration {
	return max(time.Duration(k)*every, prevEnd+gap)
}

// faultPlan draws a run's faults from its seed. Kinds come in rounds, each
// round a seeded permutation of every kind, so every kind is drawn once in
// each round (a run of ten minutes draws each about 14 times; a uniform
// draw could leave one out of a short run). Targets and hold times are
// drawn from the same seed.
type faultPlan struct {
	rng   *rand.Rand
	kinds []string
	round []string // kinds left in this round, next first
}

func newFaultPlan(seed uint64, kinds []string) *faultPlan {
	return &faultPlan{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), kinds: kinds}
}

// plannedFault is one drawn fault; target is "" for kill-leader (the
// harness finds the leader when it injects).
type plannedFault struct {
	kind, target string
	hold         time.Duration
}

// next draws the next fault against these servers and nodes.
func (p *faultPlan) next(servers, nodes []string) plannedFault {
	if len(p.round) == 0 {
		p.round = make([]string, len(p.kinds))
		for i, j := range p.rng.Perm(len(p.kinds)) {
			p.round[i] = p.kinds[j]
		}
	}
	f := plannedFault{kind: p.round[0]}
	p.round = p.round[1:]
	switch f.kind {
	case "partition-nats", "kill-nats":
		f.target = servers[p.rng.IntN(len(servers))]
	case "kill-leader":
	default:
		f.target = nodes[p.rng.IntN(len(nodes))]
	}
	f.hold = holdTime(f.kind, p.rng)
	return f
}

// holdTime is how long a fault lasts before it heals: kills are healed
// (the process started again) after 1 s, as systemd's RestartSec would.
func holdTime(kind string, rng *rand.Rand) time.Duration {
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo)) * time.Millisecond }
	switch kind {
	case "kill-worker":
		return 0
	case "kill-node", "kill-nats", "kill-leader":
		return time.Second
	case "stop-worker", "stop-node":
		return ms(1000, 3000)
	case "partition-node":
		return ms(2000, 6000)
	case "partition-nats":
		return ms(5000, 8000)
	}
	return time.Second
}

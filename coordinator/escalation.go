package coordinator

import (
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Action is what the escalation policy asks for.
type Action string

// Actions.
const (
	ActNone          Action = "none"           // healthy, or nothing more to do
	ActGraceful      Action = "graceful"       // graceful restart after Delay
	ActEmergency     Action = "emergency"      // emergency restart after Delay
	ActQuarantine    Action = "quarantine"     // stop restarting; critical alert
	ActDeclareFailed Action = "declare_failed" // not answering at all: unavailable, alert, never restarted
)

// Level of the ladder (the seed's four levels).
const (
	LevelNone        = 0
	LevelAutomated   = 1 // graceful retries with backoff, then emergency restarts
	LevelOperations  = 2 // warning alert, node degraded; retries go on at the cap
	LevelEngineering = 3 // critical alert, quarantine
	LevelEmergency   = 4 // the cluster circuit breaker (Breaker)
)

// Ladder configures the escalation policy.
type Ladder struct {
	GracefulTries  int           // 3 graceful tries...
	EmergencyTries int           // ...then 2 emergency ones, then degraded
	TriesDegraded  int           // 3 more failed tries while degraded, then quarantine
	BackoffStart   time.Duration // 1 s
	BackoffMax     time.Duration // 60 s
	ResetAfter     time.Duration // 10 min healthy resets the ladder
	FrequencyLimit int           // more than 5 restarts...
	FrequencyOver  time.Duration // ...in an hour raise restart_frequency
	// Jitter returns a factor in [0.5, 1.5) applied to each delay (the
	// executor passes a random one; tests a fixed one). Nil: no jitter.
	Jitter func() float64
}

// DefaultLadder is DESIGN.md's ladder.
func DefaultLadder() Ladder {
	return Ladder{GracefulTries: 3, EmergencyTries: 2, TriesDegraded: 3, BackoffStart: time.Second,
		BackoffMax: 60 * time.Second, ResetAfter: 10 * time.Minute, FrequencyLimit: 5, FrequencyOver: time.Hour}
}

// Facts is what the executor knows of a node when it asks the policy.
type Facts struct {
	Answering    bool      // the supervisor answers (heartbeats, health)
	Healthy      bool      // the worker reports healthy
	HealthySince time.Time // when it last became healthy (zero if not healthy)
	Failures     int       // consecutive failed automatic restarts since the ladder was reset
	LastAttempt  time.Time // when the last automatic restart ended (zero: none)
	Quarantined  bool
	Restarts     []time.Time // restarts of the node (any cause), for the frequency alert
}

// Decision is the policy's answer.
type Decision struct {
	Action Action
	Delay  time.Duration // from now
	Level  int
	// Degraded marks the node degraded (level 2 and up).
	Degraded bool
	// Reset: the node has been healthy long enough; forget its failures.
	Reset bool
	// FrequencyAlert: more than FrequencyLimit restarts in FrequencyOver.
	FrequencyAlert bool
	Reason         string
}

// Decide returns what to do about a node, given its facts and the time. It
// is pure: the same facts, time and jitter give the same decision.
func (l Ladder) Decide(f Facts, now time.Time) Decision {
	d := l.decide(f, now)
	d.FrequencyAlert = l.RestartsWithin(f.Restarts, now) > l.FrequencyLimit
	return d
}

// RestartsWithin counts the restarts of restarts in the FrequencyOver
// before now: more than FrequencyLimit raise restart_frequency.
func (l Ladder) RestartsWithin(restarts []time.Time, now time.Time) int {
	n := 0
	for _, t := range restarts {
		if now.Sub(t) <= l.FrequencyOver {
			n++
		}
	}
	return n
}

func (l Ladder) decide(f Facts, now time.Time) Decision {
	switch {
	case f.Quarantined:
		return Decision{Action: ActNone, Level: LevelEngineering, Degraded: true,
			Reason: "quarantined: no automatic restart until an operator releases it"}
	case !f.Answering:
		return Decision{Action: ActDeclareFailed, Level: l.level(f.Failures),
			Reason: "not answering (missed heartbeats, no answer to health): counted unavailable, not restarted"}
	case f.Healthy:
		d := Decision{Action: ActNone, Level: l.level(f.Failures), Degraded: f.Failures >= l.GracefulTries+l.EmergencyTries,
			Reason: "healthy"}
		if f.Failures > 0 && !f.HealthySince.IsZero() && now.Sub(f.HealthySince) >= l.ResetAfter {
			d.Reset, d.Level, d.Degraded = true, LevelNone, false
			d.Reason = fmt.Sprintf("healthy for %s: ladder reset", l.ResetAfter)
		}
		return d
	}
	quarantineAt := l.GracefulTries + l.EmergencyTries + l.TriesDegraded
	if f.Failures >= quarantineAt {
		return Decision{Action: ActQuarantine, Level: LevelEngineering, Degraded: true,
			Reason: fmt.Sprintf("%d automatic restarts failed: quarantined", f.Failures)}
	}
	d := Decision{Level: l.level(f.Failures), Delay: l.delay(f, now)}
	d.Degraded = d.Level >= LevelOperations
	switch {
	case f.Failures < l.GracefulTries:
		d.Action = ActGraceful
		d.Reason = fmt.Sprintf("unhealthy: graceful restart %d of %d", f.Failures+1, l.GracefulTries)
	case f.Failures < l.GracefulTries+l.EmergencyTries:
		d.Action = ActEmergency
		d.Reason = fmt.Sprintf("%d graceful restarts failed: emergency restart %d of %d", l.GracefulTries,
			f.Failures-l.GracefulTries+1, l.EmergencyTries)
	default:
		d.Action = ActEmergency
		d.Reason = fmt.Sprintf("degraded: emergency restart at the capped interval (%d of %d before quarantine)",
			f.Failures-l.GracefulTries-l.EmergencyTries+1, l.TriesDegraded)
	}
	return d
}

// level: 1 while graceful and emergency tries remain, 2 once degraded.
func (l Ladder) level(failures int) int {
	switch {
	case failures == 0:
		return LevelNone
	case failures < l.GracefulTries+l.EmergencyTries:
		return LevelAutomated
	case failures < l.GracefulTries+l.EmergencyTries+l.TriesDegraded:
		return LevelOperations
	}
	return LevelEngineering
}

// delay is the exponential backoff before the next try: none for the
// first, then BackoffStart doubling to BackoffMax (the cap once degraded),
// with jitter, counted from the last attempt.
func (l Ladder) delay(f Facts, now time.Time) time.Duration {
	if f.Failures == 0 {
		return 0
	}
	d := l.BackoffMax
	if f.Failures < l.GracefulTries+l.EmergencyTries {
		// The interval sequence of cenkalti/backoff's exponential backoff
		// (start doubling to the cap), jitter applied below so the policy
		// stays a pure function of its inputs.
		b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(l.BackoffStart), backoff.WithMaxInterval(l.BackoffMax),
			backoff.WithMultiplier(2), backoff.WithRandomizationFactor(0), backoff.WithMaxElapsedTime(0))
		for range f.Failures {
			d = b.NextBackOff()
		}
	}
	if l.Jitter != nil {
		d = time.Duration(float64(d) * l.Jitter())
	}
	if !f.LastAttempt.IsZero() {
		d -= now.Sub(f.LastAttempt)
	}
	return max(d, 0)
}

// Breaker is the cluster circuit breaker (level 4): when more than a third
// of the selected nodes (and at least Min) are unhealthy for reasons nobody
// planned, automatic restarts and rolls stop; it closes by itself once the
// count has stayed under the threshold for CloseAfter, or by a reset. The
// leader's pass observes it while the reset endpoint and readers run on
// other goroutines: its state is behind mu.
type Breaker struct {
	Fraction   float64       // 1/3
	Min        int           // 2
	CloseAfter time.Duration // 5 min

	mu        sync.Mutex
	open      bool
	openedAt  time.Time
	belowFrom time.Time
	reason    string
	closings  uint64 // times it closed (by itself or reset)
}

// Closings counts the times the breaker closed, by itself or by a reset:
// a closing and an opening between two looks still end one episode.
func (b *Breaker) Closings() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closings
}

// NewBreaker is DESIGN.md's breaker.
func NewBreaker() *Breaker { return &Breaker{Fraction: 1.0 / 3, Min: 2, CloseAfter: 5 * time.Minute} }

// Open reports whether the breaker is open, and why.
func (b *Breaker) Open() (bool, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open, b.reason
}

// restore opens the breaker as a former leader left it (from ORCH_COORD).
func (b *Breaker) restore(reason string, openedAt time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open, b.reason, b.openedAt = true, reason, openedAt
}

// Observe feeds the breaker a count: unplanned unhealthy nodes (not the
// ones a roll or an operator is restarting) out of total. It returns true
// when the state changed.
func (b *Breaker) Observe(unhealthy, total int, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	over := total > 0 && unhealthy >= b.Min && float64(unhealthy) > b.Fraction*float64(total)
	switch {
	case !b.open && over:
		b.open, b.openedAt, b.belowFrom = true, now, time.Time{}
		b.reason = fmt.Sprintf("%d of %d nodes unhealthy (threshold: more than %.0f%% and at least %d)",
			unhealthy, total, b.Fraction*100, b.Min)
		return true
	case b.open && over:
		b.belowFrom = time.Time{}
	case b.open && !over:
		if b.belowFrom.IsZero() {
			b.belowFrom = now
		}
		if now.Sub(b.belowFrom) >= b.CloseAfter {
			b.open, b.reason = false, ""
			b.closings++
			return true
		}
	}
	return false
}

// Reset closes the breaker by hand (`restartcoord breaker reset`).
func (b *Breaker) Reset() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.open
	b.open, b.reason, b.belowFrom = false, "", time.Time{}
	if was {
		b.closings++
	}
	return was
}

package coordinator

import (
	"testing"
	"time"
)

// The whole ladder, one failure at a time, with no real waiting.
func TestLadderClimbsToQuarantine(t *testing.T) {
	l := DefaultLadder()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	want := []struct {
		action   Action
		delay    time.Duration
		level    int
		degraded bool
	}{
		{ActGraceful, 0, LevelNone, false},
		{ActGraceful, time.Second, LevelAutomated, false},
		{ActGraceful, 2 * time.Second, LevelAutomated, false},
		{ActEmergency, 4 * time.Second, LevelAutomated, false},
		{ActEmergency, 8 * time.Second, LevelAutomated, false},
		{ActEmergency, 60 * time.Second, LevelOperations, true},
		{ActEmergency, 60 * time.Second, LevelOperations, true},
		{ActEmergency, 60 * time.Second, LevelOperations, true},
		{ActQuarantine, 0, LevelEngineering, true},
	}
	for failures, w := range want {
		d := l.Decide(Facts{Answering: true, Failures: failures, LastAttempt: now}, now)
		if d.Action != w.action || d.Delay != w.delay || d.Level != w.level || d.Degraded != w.degraded {
			t.Fatalf("after %d failures: got %s after %s level %d degraded %v (%s), want %s after %s level %d degraded %v",
				failures, d.Action, d.Delay, d.Level, d.Degraded, d.Reason, w.action, w.delay, w.level, w.degraded)
		}
	}
	if d := l.Decide(Facts{Answering: true, Failures: 9, Quarantined: true}, now); d.Action != ActNone || d.Level != LevelEngineering {
		t.Fatalf("quarantined node: %+v", d)
	}
}

func TestLadderDelayCountsFromLastAttemptWithJitter(t *testing.T) {
	l := DefaultLadder()
	l.Jitter = func() float64 { return 1.5 }
	now := time.Unix(1000, 0)
	d := l.Decide(Facts{Answering: true, Failures: 2, LastAttempt: now.Add(-time.Second)}, now)
	if d.Delay != 2*time.Second { // 2 s x 1.5 = 3 s, one already gone
		t.Fatalf("delay %s, want 2s", d.Delay)
	}
	if d := l.Decide(Facts{Answering: true, Failures: 2, LastAttempt: now.Add(-time.Hour)}, now); d.Delay != 0 {
		t.Fatalf("delay %s after a long wait, want 0", d.Delay)
	}
}

func TestLadderNotAnsweringIsDeclaredFailedNotRestarted(t *testing.T) {
	d := DefaultLadder().Decide(Facts{Answering: false, Failures: 1}, time.Now())
	if d.Action != ActDeclareFailed {
		t.Fatalf("got %+v, want declare_failed", d)
	}
}

func TestLadderResetsAfterTenHealthyMinutes(t *testing.T) {
	l := DefaultLadder()
	now := time.Unix(100000, 0)
	f := Facts{Answering: true, Healthy: true, Failures: 6, HealthySince: now.Add(-9 * time.Minute)}
	if d := l.Decide(f, now); d.Reset || !d.Degraded || d.Action != ActNone {
		t.Fatalf("healthy 9 min: %+v", d)
	}
	f.HealthySince = now.Add(-10 * time.Minute)
	if d := l.Decide(f, now); !d.Reset || d.Degraded || d.Level != LevelNone {
		t.Fatalf("healthy 10 min: %+v", d)
	}
}

func TestRestartFrequencyAlert(t *testing.T) {
	now := time.Unix(100000, 0)
	var rs []time.Time
	for i := range 6 {
		rs = append(rs, now.Add(-time.Duration(i*10)*time.Minute))
	}
	l := DefaultLadder()
	if d := l.Decide(Facts{Answering: true, Healthy: true, Restarts: rs[:5]}, now); d.FrequencyAlert {
		t.Fatal("5 restarts in an hour alerted")
	}
	if d := l.Decide(Facts{Answering: true, Healthy: true, Restarts: rs}, now); !d.FrequencyAlert {
		t.Fatal("6 restarts in an hour did not alert")
	}
	old := append([]time.Time{}, rs[:5]...)
	old = append(old, now.Add(-2*time.Hour))
	if d := l.Decide(Facts{Answering: true, Healthy: true, Restarts: old}, now); d.FrequencyAlert {
		t.Fatal("a restart two hours ago counted")
	}
}

func TestBreakerOpensAndClosesAfterStayingBelow(t *testing.T) {
	b := NewBreaker()
	t0 := time.Unix(0, 0)
	steps := []struct {
		unhealthy, total int
		at               time.Duration
		open, changed    bool
	}{
		{3, 9, 0, false, false},               // a third is not more than a third
		{1, 2, 0, false, false},               // below the minimum of 2
		{4, 9, time.Second, true, true},       // opens
		{2, 9, 2 * time.Second, true, false},  // below: the clock starts
		{2, 9, 4 * time.Minute, true, false},  // not long enough
		{5, 9, 5 * time.Minute, true, false},  // over again: the clock stops
		{1, 9, 6 * time.Minute, true, false},  // below again
		{1, 9, 11 * time.Minute, false, true}, // 5 minutes below: closes
	}
	for i, s := range steps {
		changed := b.Observe(s.unhealthy, s.total, t0.Add(s.at))
		open, reason := b.Open()
		if open != s.open || changed != s.changed {
			t.Fatalf("step %d: open %v changed %v (%s), want open %v changed %v", i, open, changed, reason, s.open, s.changed)
		}
	}
	b.Observe(9, 9, t0)
	if !b.Reset() {
		t.Fatal("reset of an open breaker reported no change")
	}
	if open, _ := b.Open(); open {
		t.Fatal("open after reset")
	}
}

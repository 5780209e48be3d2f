package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
	"pgregory.net/rapid"
)

func TestDecideResume(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	base := func() PausedRoll {
		return PausedRoll{State: schema.RollPaused, PausedReason: schema.PausedNodeFailed, AutoResume: true,
			MaxAutoResumes: 3, MinHealthyTime: 5 * time.Second,
			Failed: []FailedNode{{ID: "n02", HealthySince: ago(5 * time.Second)}}}
	}
	cases := []struct {
		name   string
		change func(p *PausedRoll)
		resume bool
		after  time.Duration
		reason string // a part of the reason
	}{
		{"healthy for exactly min_healthy_time", func(*PausedRoll) {}, true, 0, "automatic resume 1 of 3"},
		{"healthy long ago, last resume of the budget", func(p *PausedRoll) { p.AutoResumes = 2; p.Failed[0].HealthySince = ago(time.Hour) },
			true, 0, "automatic resume 3 of 3"},
		{"healthy, not for long enough", func(p *PausedRoll) { p.Failed[0].HealthySince = ago(2 * time.Second) }, false, 3 * time.Second, "not yet"},
		{"not healthy", func(p *PausedRoll) { p.Failed[0].HealthySince = time.Time{} }, false, 0, "n02 is not healthy"},
		{"one of two failed nodes not healthy", func(p *PausedRoll) { p.Failed = append(p.Failed, FailedNode{ID: "n05"}) }, false, 0, "n05 is not healthy"},
		{"the later of two recoveries sets the wait", func(p *PausedRoll) {
			p.Failed = append(p.Failed, FailedNode{ID: "n05", HealthySince: ago(time.Second)})
		}, false, 4 * time.Second, "not yet"},
		{"quarantined", func(p *PausedRoll) { p.Failed[0].Quarantined = true }, false, 0, "quarantined"},
		{"budget spent", func(p *PausedRoll) { p.AutoResumes = 3 }, false, 0, "spent"},
		{"no budget at all", func(p *PausedRoll) { p.MaxAutoResumes = 0 }, false, 0, "spent"},
		{"auto_resume off", func(p *PausedRoll) { p.AutoResume = false }, false, 0, "auto_resume is off"},
		{"paused by an operator", func(p *PausedRoll) { p.PausedReason = schema.PausedOperator }, false, 0, "only an operator"},
		{"paused by the breaker", func(p *PausedRoll) { p.PausedReason = schema.PausedBreaker }, false, 0, "only an operator"},
		{"paused for a quarantine", func(p *PausedRoll) { p.PausedReason = schema.PausedQuarantine }, false, 0, "only an operator"},
		{"paused before reasons were kept", func(p *PausedRoll) { p.PausedReason = "" }, false, 0, "only an operator"},
		{"breaker open since the pause", func(p *PausedRoll) { p.BreakerOpen = true }, false, 0, "circuit breaker open"},
		{"running", func(p *PausedRoll) { p.State = schema.RollRunning }, false, 0, "not paused"},
		{"min_healthy_time 0: healthy is enough", func(p *PausedRoll) { p.MinHealthyTime = 0; p.Failed[0].HealthySince = now }, true, 0, "resume"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.change(&p)
			d := DecideResume(p, now)
			if d.Resume != tc.resume || d.After != tc.after || !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("got %+v, want resume %v after %s reason containing %q", d, tc.resume, tc.after, tc.reason)
			}
		})
	}
}

// For any sequence of failures, operator pauses and resumes, breaker
// pauses and health flips, the roll record driven by the real pause,
// resume and recovery-clock code: an operator's pause is never resumed
// automatically, no automatic resume happens for another reason than a
// failed node all of whose failed nodes have been healthy for
// min_healthy_time, and the budget of automatic resumes is never exceeded.
func TestAutoResumeProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		req := schema.DefaultRollRequest()
		req.AutoResume = rapid.Bool().Draw(t, "auto_resume")
		req.MaxAutoResumes = rapid.IntRange(0, 4).Draw(t, "max_auto_resumes")
		req.MinHealthyTime = float64(rapid.IntRange(0, 6).Draw(t, "min_healthy_time"))
		r := &rollRecord{ID: "r", Request: req, State: schema.RollRunning, Failed: map[string]string{}}
		nodes := []string{"n1", "n2", "n3"}
		healthy := map[string]bool{"n1": true, "n2": true, "n3": true}
		quarantined := map[string]bool{}
		breaker := false
		byOperator := false // paused by an operator and not resumed since
		clock := time.Unix(0, 0)
		automatic := 0
		for tick := range 300 {
			clock = clock.Add(time.Second)
			id := rapid.SampledFrom(nodes).Draw(t, "node")
			switch ev := rapid.IntRange(0, 11).Draw(t, "event"); {
			case ev == 0: // a node out in the roll fails its restart
				r.Failed[id], healthy[id] = "restart failed", false
				if r.State == schema.RollRunning {
					r.pause(schema.PausedNodeFailed, id, "paused", clock)
				}
			case ev == 1:
				r.pause(schema.PausedOperator, "", "", clock)
				byOperator = true
			case ev == 2 && r.State == schema.RollPaused:
				r.resume()
				byOperator = false
			case ev == 3 && r.State == schema.RollRunning && breaker:
				r.pause(schema.PausedBreaker, "", "paused", clock)
			case ev == 4:
				breaker = !breaker
			case ev == 5:
				quarantined[id] = !quarantined[id]
			case ev <= 9:
				healthy[id] = !healthy[id]
			}
			r.observeRecovery(healthy, clock)
			p := r.pausedRoll(breaker, quarantined)
			d := DecideResume(p, clock)
			if !d.Resume {
				continue
			}
			switch {
			case byOperator:
				t.Fatalf("tick %d: a roll paused by an operator resumed automatically: %+v", tick, p)
			case r.PausedReason != schema.PausedNodeFailed || !req.AutoResume || breaker:
				t.Fatalf("tick %d: resumed automatically %+v", tick, p)
			}
			for _, n := range p.Failed {
				if !healthy[n.ID] || quarantined[n.ID] || clock.Sub(n.HealthySince) < schema.Seconds(req.MinHealthyTime) {
					t.Fatalf("tick %d: resumed with %s healthy %v quarantined %v since %s", tick, n.ID, healthy[n.ID], quarantined[n.ID], n.HealthySince)
				}
			}
			r.AutoResumes++
			r.resume()
			automatic++
			if automatic > req.MaxAutoResumes {
				t.Fatalf("tick %d: %d automatic resumes, budget %d", tick, automatic, req.MaxAutoResumes)
			}
		}
	})
}

// A pause's reason and time are shown while paused and forgotten by a
// resume; the count of automatic resumes stays.
func TestRollStatusShowsThePause(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	r := &rollRecord{ID: "r", Request: schema.DefaultRollRequest(), State: schema.RollRunning,
		Failed: map[string]string{"n2": "restart failed"}, AutoResumes: 2}
	r.pause(schema.PausedNodeFailed, "n2", "paused: n2", now)
	st := r.status()
	if st.PausedReason != schema.PausedNodeFailed || st.PausedSince == nil || !st.PausedSince.Equal(now) || st.AutoResumes != 2 {
		t.Fatalf("paused: got reason %q since %v auto_resumes %d", st.PausedReason, st.PausedSince, st.AutoResumes)
	}
	r.resume()
	st = r.status()
	if st.PausedReason != "" || st.PausedSince != nil || st.AutoResumes != 2 || len(st.Failed) != 0 || st.State != schema.RollRunning {
		t.Fatalf("resumed: got %s reason %q since %v auto_resumes %d failed %v", st.State, st.PausedReason, st.PausedSince, st.AutoResumes, st.Failed)
	}
}

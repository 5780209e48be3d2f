package coordinator

import (
	"fmt"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// PausedRoll is what the automatic resume of a paused roll looks at: the
// roll's pause, its budget of automatic resumes, and the nodes whose failure
// paused it.
type PausedRoll struct {
	State          string // the roll's state
	PausedReason   string // schema.Paused*
	AutoResume     bool   // the request's auto_resume
	MaxAutoResumes int    // the request's max_auto_resumes
	AutoResumes    int    // automatic resumes so far
	MinHealthyTime time.Duration
	BreakerOpen    bool
	Failed         []FailedNode // the roll's failed nodes, each must have recovered
}

// FailedNode is a failed node of a paused roll as seen now.
type FailedNode struct {
	ID          string
	Quarantined bool
	// HealthySince is when the node was first seen healthy without a break
	// since; zero when it is not healthy now.
	HealthySince time.Time
}

// ResumeDecision says whether a paused roll resumes now; when not, After
// (if > 0) is when asking again may give another answer.
type ResumeDecision struct {
	Resume bool
	After  time.Duration
	Reason string
}

// MayAutoResume says whether a paused roll may ever resume by itself as
// things stand, whatever its nodes do: only a pause for a failed node
// (schema.PausedNodeFailed), with auto_resume on and budget left. An
// operator's pause, a quarantine and the breaker need a person: the first
// was asked for, the other two will not clear by themselves in a roll's
// time (DECISIONS.md).
func MayAutoResume(p PausedRoll) (bool, string) {
	switch {
	case p.State != schema.RollPaused:
		return false, "not paused"
	case p.PausedReason != schema.PausedNodeFailed:
		return false, fmt.Sprintf("paused for %q: only an operator resumes it", p.PausedReason)
	case !p.AutoResume:
		return false, "auto_resume is off"
	case p.AutoResumes >= p.MaxAutoResumes:
		return false, fmt.Sprintf("its %d automatic resume(s) are spent", p.MaxAutoResumes)
	}
	return true, ""
}

// DecideResume is the automatic resume policy: a roll paused because a node
// failed resumes once every failed node has been healthy for the roll's
// min_healthy_time (the test a node of the roll passes to be done), within
// its budget, and not while the breaker is open. Pure: no I/O, the clock is
// now.
func DecideResume(p PausedRoll, now time.Time) ResumeDecision {
	if ok, why := MayAutoResume(p); !ok {
		return ResumeDecision{Reason: why}
	}
	if p.BreakerOpen {
		return ResumeDecision{Reason: "circuit breaker open"}
	}
	var wait time.Duration
	for _, n := range p.Failed {
		switch {
		case n.Quarantined:
			return ResumeDecision{Reason: n.ID + " is quarantined"}
		case n.HealthySince.IsZero():
			return ResumeDecision{Reason: n.ID + " is not healthy"}
		case now.Sub(n.HealthySince) < p.MinHealthyTime:
			wait = max(wait, p.MinHealthyTime-now.Sub(n.HealthySince))
		}
	}
	if wait > 0 {
		return ResumeDecision{After: wait, Reason: fmt.Sprintf("failed node(s) healthy, not yet for %s", p.MinHealthyTime)}
	}
	return ResumeDecision{Resume: true, Reason: fmt.Sprintf("failed node(s) healthy for %s: automatic resume %d of %d",
		p.MinHealthyTime, p.AutoResumes+1, p.MaxAutoResumes)}
}

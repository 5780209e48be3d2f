package coordinator

import (
	"math"
	"slices"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// The seed's KPIs, computed from facts (pure): restart results, the roll
// ids on record, the nodes' outages (declared failed until heard again)
// and the closed reconnection windows. handleReport gathers the facts.

// Restart types of the report's by_type (the seed's "error rate by restart
// type").
const (
	TypeGraceful      = "graceful"
	TypeEmergency     = "emergency"
	TypeCrashRecovery = "crash_recovery"
	TypeRolling       = "rolling"
)

// restartTypes are the by_type keys, always all present.
var restartTypes = []string{TypeGraceful, TypeEmergency, TypeCrashRecovery, TypeRolling}

// Alert kinds the downtime KPI reads: a node declared failed, and heard
// again afterwards.
const (
	AlertHealthCheckFailed = schema.AlertHealthCheckFailed
	AlertNodeRecovered     = schema.AlertNodeRecovered
)

// DowntimeBudgetPerMonth is the seed's availability SLO: at most 5 minutes
// of downtime a month, per node.
const DowntimeBudgetPerMonth = 5 * time.Minute

// restartType classifies a restart: crash recovery by its reason; a roll's
// restart by its restart id (a roll on record in rolls, or the
// coordinator's own "roll-" form) or its reason; otherwise graceful or
// emergency by its graceful flag.
func restartType(r schema.RestartResult, rolls map[string]bool) string {
	switch {
	case r.Reason == schema.ReasonCrashRecovery:
		return TypeCrashRecovery
	case r.Reason == schema.ReasonRollingRestart || rollOfRestart(r.RestartID, r.NodeID, rolls) != "":
		return TypeRolling
	case r.Graceful:
		return TypeGraceful
	}
	return TypeEmergency
}

// TypeStats is one restart type's figures in the report.
type TypeStats struct {
	Total        int            `json:"total"`
	Succeeded    int            `json:"succeeded"`
	Failed       int            `json:"failed"`
	SuccessRate  float64        `json:"success_rate"` // percent; 100 with none
	ErrorRate    float64        `json:"error_rate"`   // percent; 0 with none
	ErrorsByType map[string]int `json:"errors_by_type"`
}

// Outage is a time a node was declared failed: from its last heartbeat
// before the declaration to when it was heard again (or, not heard again,
// to its next restart's completion or the report's end).
type Outage struct {
	NodeID string    `json:"node_id"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// NodeDowntime is one node's downtime in the report's window.
type NodeDowntime struct {
	Seconds        float64 `json:"seconds"`         // restarts and outages, overlaps counted once
	RestartSeconds float64 `json:"restart_seconds"` // restarts alone
	FailedSeconds  float64 `json:"failed_seconds"`  // declared failed alone
	WithinBudget   bool    `json:"within_budget"`
}

// ReconnectionKPI is the report's client reconnection figure over the
// restarts whose 60 s reconnection window closed in the report's window.
type ReconnectionKPI struct {
	Restarts       int     `json:"restarts"`
	Clients        int     `json:"clients"`
	Reconnected    int     `json:"reconnected"`
	Failed         int     `json:"failed"`
	AverageSeconds float64 `json:"average_seconds"`
}

// ReportFacts is what a report is computed from.
type ReportFacts struct {
	From, To      time.Time
	Restarts      []schema.RestartResult
	Rolls         map[string]bool // roll ids on record (see rollOfRestart)
	Outages       []Outage
	Reconnections []schema.ReconnectionOutcome
}

// alertRecord is the part of a stored alert the downtime KPI reads.
type alertRecord struct {
	Kind      string         `json:"kind"`
	Status    string         `json:"status,omitempty"`
	NodeID    string         `json:"node_id"`
	Timestamp time.Time      `json:"timestamp"`
	Details   map[string]any `json:"details"`
}

// outagesFrom pairs each health_check_failed alert with the node's next
// node_recovered alert. An outage starts at the last heartbeat the alert
// names (the node was silent since), else at the alert. One with no
// recovery on record ends at the node's next restart completed after it
// (a restart result means a worker served again), else at `to`: still
// down, or back unseen (a leader change while it was down), counted as
// down. Alerts are in stream order. Only the health_check_failed alerts
// that declare a node failed count: not their resolution, nor those of a
// node that answered while unhealthy (details reason "unhealthy").
func outagesFrom(alerts []alertRecord, restarts []schema.RestartResult, to time.Time) []Outage {
	var out []Outage
	for i, a := range alerts {
		if a.Kind != AlertHealthCheckFailed || a.NodeID == "" || a.Status == schema.AlertStatusResolved ||
			a.Details["reason"] == HealthUnhealthy {
			continue
		}
		o := Outage{NodeID: a.NodeID, Start: a.Timestamp, End: to}
		if s, ok := a.Details["last_heartbeat"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil && !t.IsZero() && t.Before(a.Timestamp) {
				o.Start = t
			}
		}
		ended := false
		for _, b := range alerts[i+1:] {
			if b.Kind == AlertNodeRecovered && b.NodeID == a.NodeID && !b.Timestamp.Before(a.Timestamp) {
				o.End, ended = b.Timestamp, true
				if s, ok := b.Details["recovered_at"].(string); ok {
					if t, err := time.Parse(time.RFC3339Nano, s); err == nil && !t.Before(a.Timestamp) {
						o.End = t
					}
				}
				break
			}
		}
		if !ended {
			for _, r := range restarts {
				if r.NodeID == a.NodeID && r.CompletedAt.After(a.Timestamp) && r.CompletedAt.Before(o.End) {
					o.End = r.CompletedAt
				}
			}
		}
		if o.End.After(o.Start) {
			out = append(out, o)
		}
	}
	return out
}

// span is a time interval.
type span struct{ from, to time.Time }

// covered is the length of the union of spans clipped to [from, to].
func covered(spans []span, from, to time.Time) time.Duration {
	var clipped []span
	for _, s := range spans {
		if s.from.Before(from) {
			s.from = from
		}
		if s.to.After(to) {
			s.to = to
		}
		if s.to.After(s.from) {
			clipped = append(clipped, s)
		}
	}
	slices.SortFunc(clipped, func(a, b span) int { return a.from.Compare(b.from) })
	var total time.Duration
	var cur span
	for i, s := range clipped {
		switch {
		case i == 0:
			cur = s
		case !s.from.After(cur.to):
			if s.to.After(cur.to) {
				cur.to = s.to
			}
		default:
			total += cur.to.Sub(cur.from)
			cur = s
		}
	}
	if len(clipped) > 0 {
		total += cur.to.Sub(cur.from)
	}
	return total
}

// restartSpan is the time a restart kept its node from serving.
func restartSpan(r schema.RestartResult) span {
	start := r.StartedAt
	if start.IsZero() || start.After(r.CompletedAt) {
		start = r.CompletedAt.Add(-schema.Seconds(r.Duration))
	}
	return span{start, r.CompletedAt}
}

// downtimeBudget is the per-node budget for a window: 5 minutes a month
// (30 days), prorated.
func downtimeBudget(window time.Duration) float64 {
	return DowntimeBudgetPerMonth.Seconds() * window.Hours() / (30 * 24)
}

// BuildReport computes the report from restart results alone (pure); see
// BuildReportFrom for the full set of facts.
func BuildReport(all []schema.RestartResult, from, to time.Time) *Report {
	return BuildReportFrom(ReportFacts{From: from, To: to, Restarts: all})
}

// BuildReportFrom computes the report (pure). A restart belongs to the
// window when it completed in it; a reconnection window when it closed in
// it; outages count for the part inside it.
func BuildReportFrom(f ReportFacts) *Report {
	from, to := f.From, f.To
	window := to.Sub(from)
	rep := &Report{Type: "io.restartcoord.v1.report", Period: window.String(), From: from, To: to,
		ByReason: map[string]int{}, ErrorsByType: map[string]int{}, SLOCompliance: map[string]bool{},
		SuccessRate: 100, StatePreservationRate: 100, ReconnectionRate: 100,
		ByType: map[string]*TypeStats{}, DowntimeByNode: map[string]*NodeDowntime{}}
	for _, k := range restartTypes {
		rep.ByType[k] = &TypeStats{SuccessRate: 100, ErrorsByType: map[string]int{}}
	}
	var durations, gracefulDurations []float64
	succ, graceful, preserved := 0, 0, 0
	restartSpans, outageSpans := map[string][]span{}, map[string][]span{}
	for _, r := range f.Restarts {
		if r.CompletedAt.Before(from) || r.CompletedAt.After(to) {
			continue
		}
		rep.TotalRestarts++
		rep.ByReason[string(r.Reason)]++
		durations = append(durations, r.Duration)
		restartSpans[r.NodeID] = append(restartSpans[r.NodeID], restartSpan(r))
		ts := rep.ByType[restartType(r, f.Rolls)]
		ts.Total++
		if r.Success {
			succ++
			ts.Succeeded++
		} else {
			code := "UNKNOWN"
			if r.Error != nil {
				code = string(r.Error.Code)
			}
			rep.ErrorsByType[code]++
			ts.Failed++
			ts.ErrorsByType[code]++
		}
		if r.Graceful {
			graceful++
			gracefulDurations = append(gracefulDurations, r.Duration)
			if r.Success && r.State.Preserved && r.State.TasksRestored >= r.State.TasksSaved {
				preserved++
			}
		}
	}
	for _, ts := range rep.ByType {
		if ts.Total > 0 {
			ts.SuccessRate = round2(float64(ts.Succeeded) * 100 / float64(ts.Total))
			ts.ErrorRate = round2(float64(ts.Failed) * 100 / float64(ts.Total))
		}
	}
	if rep.TotalRestarts > 0 {
		rep.SuccessRate = round2(float64(succ) * 100 / float64(rep.TotalRestarts))
		rep.AverageDuration = round3(mean(durations))
		slices.Sort(durations)
		rep.P95Duration = durations[int(math.Ceil(0.95*float64(len(durations))))-1]
	}
	rep.GracefulRestarts = graceful
	if graceful > 0 {
		rep.StatePreservationRate = round2(float64(preserved) * 100 / float64(graceful))
		rep.GracefulAverageDuration = round3(mean(gracefulDurations))
	}

	// Downtime, per node: its restarts and its outages, overlaps once.
	for _, o := range f.Outages {
		outageSpans[o.NodeID] = append(outageSpans[o.NodeID], span{o.Start, o.End})
	}
	budget := downtimeBudget(window)
	rep.DowntimeBudgetSeconds = round3(budget)
	downtimeOK := true
	nodes := map[string]bool{}
	for n := range restartSpans {
		nodes[n] = true
	}
	for n := range outageSpans {
		nodes[n] = true
	}
	var total float64
	for n := range nodes {
		all := append(slices.Clone(restartSpans[n]), outageSpans[n]...)
		d := &NodeDowntime{Seconds: round3(covered(all, from, to).Seconds()),
			RestartSeconds: round3(covered(restartSpans[n], from, to).Seconds()),
			FailedSeconds:  round3(covered(outageSpans[n], from, to).Seconds())}
		if d.Seconds == 0 {
			continue // an outage or restart wholly outside the window
		}
		d.WithinBudget = d.Seconds <= budget
		downtimeOK = downtimeOK && d.WithinBudget
		rep.DowntimeByNode[n] = d
		total += d.Seconds
	}
	rep.DowntimeSeconds = round3(total)

	// Reconnection: each client of each closed window, back in time or not.
	rc := ReconnectionKPI{}
	var secs float64
	for _, o := range f.Reconnections {
		if o.ClosedAt.Before(from) || o.ClosedAt.After(to) {
			continue
		}
		rc.Restarts++
		rc.Reconnected += o.Reconnected
		rc.Failed += o.Failed
		secs += o.Seconds
	}
	rc.Clients = rc.Reconnected + rc.Failed
	if rc.Reconnected > 0 {
		rc.AverageSeconds = round3(secs / float64(rc.Reconnected))
	}
	if rc.Clients > 0 {
		rep.ReconnectionRate = round2(float64(rc.Reconnected) * 100 / float64(rc.Clients))
	}
	rep.Reconnection = rc

	rep.Targets = map[string]float64{"success_rate": 99.5, "duration": 30, "reconnection": 99, "state_preservation": 100,
		"downtime_seconds": rep.DowntimeBudgetSeconds}
	rep.SLOCompliance["success_rate"] = rep.SuccessRate >= 99.5
	rep.SLOCompliance["duration"] = rep.GracefulAverageDuration <= 30
	rep.SLOCompliance["reconnection"] = rep.ReconnectionRate >= 99
	rep.SLOCompliance["state_preservation"] = rep.StatePreservationRate >= 100
	rep.SLOCompliance["downtime"] = downtimeOK
	return rep
}

func mean(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

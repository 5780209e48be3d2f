package dashboard

import (
	"sort"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// nodeView is one row of the fleet table. Its fields come from three
// sources of different freshness: cluster.nodes (the coordinator's view,
// polled), heartbeats and restart events (live). live says when the newest
// live datum was applied, so a poll answered from an older heartbeat does
// not put back a worker pid that a restart event already replaced.
type nodeView struct {
	ID                string
	Group             string
	Priority          int
	Phase             string
	Healthy           bool
	Answering         bool
	Failed            bool
	Quarantined       bool
	Degraded          bool
	EscalationLevel   int
	WorkerPID         int
	Version           string
	StartedAt         *time.Time
	LastRestart       *time.Time
	Restarts24h       int
	ActiveConnections int
	BufferedRequests  int

	listed        bool      // cluster.nodes has it
	lastHeartbeat time.Time // newest heartbeat seen (from the bus or the coordinator)
	live          time.Time // when the newest heartbeat or event was applied
	histCount     int       // restarts in 24 h from cluster.history
	histLast      *time.Time
	ver           uint64 // state version of its last visible change
}

// same reports whether a and b render alike (the bookkeeping fields aside).
func (a nodeView) same(b nodeView) bool {
	return a.ID == b.ID && a.Group == b.Group && a.Priority == b.Priority && a.Phase == b.Phase &&
		a.Healthy == b.Healthy && a.Answering == b.Answering && a.Failed == b.Failed &&
		a.Quarantined == b.Quarantined && a.Degraded == b.Degraded && a.EscalationLevel == b.EscalationLevel &&
		a.WorkerPID == b.WorkerPID && a.Version == b.Version && sameTime(a.StartedAt, b.StartedAt) &&
		sameTime(a.LastRestart, b.LastRestart) && a.Restarts24h == b.Restarts24h &&
		a.ActiveConnections == b.ActiveConnections && a.BufferedRequests == b.BufferedRequests
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// later is the later of a and b (nil is earliest).
func later(a, b *time.Time) *time.Time {
	if a == nil {
		return b
	}
	if b == nil || a.After(*b) {
		return a
	}
	return b
}

// Health says what the row's health cell shows, worst first.
func (n nodeView) Health() string {
	switch {
	case n.Failed:
		return "failed"
	case n.Quarantined:
		return "quarantined"
	case n.listed && !n.Answering:
		return "unreachable"
	case !n.Healthy:
		return "unhealthy"
	case n.Degraded:
		return "degraded"
	}
	return "healthy"
}

// rollView is one roll on the page: in progress, or ended a short while ago
// (so its last state stays readable).
type rollView struct {
	Status    schema.RollStatus
	LastEvent time.Time
	Current   []nodePhase // the nodes being restarted, with their phase (filled for rendering)
}

// nodePhase is a node being restarted by a roll and where it is.
type nodePhase struct {
	ID    string
	Phase string
}

// Active reports whether the roll still runs or waits.
func (r rollView) Active() bool {
	return r.Status.State == schema.RollRunning || r.Status.State == schema.RollPaused || r.Status.State == ""
}

// alertView is one alert of ORCH_ALERTS or the live subscription.
type alertView struct {
	AlertID   string          `json:"alert_id"`
	Severity  schema.Severity `json:"severity"`
	Kind      string          `json:"kind"`
	NodeID    string          `json:"node_id"`
	Message   string          `json:"message"`
	Timestamp time.Time       `json:"timestamp"`
}

// report is the reply of cluster.report, decoded without the coordinator
// package: the figures the page shows, and the rest kept as JSON values so
// that a figure added to the report shows without a change here.
type report struct {
	Period                string             `json:"period"`
	From                  time.Time          `json:"from"`
	To                    time.Time          `json:"to"`
	TotalRestarts         int                `json:"total_restarts"`
	SuccessRate           float64            `json:"success_rate"`
	AverageDuration       float64            `json:"average_duration"`
	P95Duration           float64            `json:"p95_duration"`
	ReconnectionRate      float64            `json:"reconnection_rate"`
	StatePreservationRate float64            `json:"state_preservation_rate"`
	DowntimeSeconds       float64            `json:"downtime_seconds"`
	ByReason              map[string]int     `json:"by_reason"`
	ErrorsByType          map[string]int     `json:"errors_by_type"`
	SLOCompliance         map[string]bool    `json:"slo_compliance"`
	Targets               map[string]float64 `json:"targets"`
}

// restart is one entry of cluster.history.
type restart = schema.ClusterRestart

// sortedNodes orders rows as the coordinator's priority, then id.
func sortedNodes(m map[string]*nodeView) []*nodeView {
	out := make([]*nodeView, 0, len(m))
	for _, n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		return a.ID < b.ID
	})
	return out
}

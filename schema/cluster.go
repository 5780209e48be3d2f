package schema

import (
	"math"
	"time"
)

// Cluster message types.
const (
	TypeClusterHealth = typePrefix + "cluster_health"
	TypeNodeList      = typePrefix + "node_list"
	TypeRollPlan      = typePrefix + "roll_plan"
	TypeRollStatus    = typePrefix + "roll_status"
	TypeRollEvent     = typePrefix + "roll_event"
	TypeClusterNode   = typePrefix + "cluster_node"
	TypeBreaker       = typePrefix + "breaker"
)

// Selector picks a roll's nodes.
type Selector struct {
	Group string   `json:"group,omitempty"`
	Nodes []string `json:"nodes,omitempty"`
}

// RollRequest is the body of roll.plan and roll.start.
type RollRequest struct {
	Selector        Selector `json:"selector"`
	MaxUnavailable  int      `json:"max_unavailable"`
	Canary          int      `json:"canary"`
	MinHealthyTime  float64  `json:"min_healthy_time"`
	HealthyDeadline float64  `json:"healthy_deadline"`
	Graceful        bool     `json:"graceful"`
	PreserveState   bool     `json:"preserve_state"`
	Reason          Reason   `json:"reason"`
	Timeout         float64  `json:"timeout"`
	// ConfigVersion, when set, makes every restart a configuration_update
	// and checks that each node reports this config_version afterwards.
	ConfigVersion string `json:"config_version,omitempty"`
	// RollID, when set by the caller, names the roll: a second start with
	// the same id returns the first roll (like restart_id), so a start
	// repeated after a lost answer never makes two rolls.
	RollID string `json:"roll_id,omitempty"`
	// AutoResume: a roll paused because a node failed its restart resumes
	// by itself once that node is healthy again for min_healthy_time, at
	// most MaxAutoResumes times.
	AutoResume     bool `json:"auto_resume"`
	MaxAutoResumes int  `json:"max_auto_resumes"`
}

// DefaultRollRequest is what {} means (the selector is still required).
func DefaultRollRequest() RollRequest {
	return RollRequest{MaxUnavailable: 1, MinHealthyTime: 5, HealthyDeadline: 60, Graceful: true,
		PreserveState: true, Reason: ReasonRollingRestart, Timeout: DefaultRestartTimeout,
		AutoResume: true, MaxAutoResumes: DefaultMaxAutoResumes}
}

// Validate implements Validator.
func (r *RollRequest) Validate() error {
	if r.Selector.Group == "" && len(r.Selector.Nodes) == 0 {
		return Invalid("selector", "selector needs a group or nodes")
	}
	if r.Selector.Group != "" && !ValidToken(r.Selector.Group) {
		return Invalid("selector.group", "group %q is not a valid token", r.Selector.Group)
	}
	for _, n := range r.Selector.Nodes {
		if !ValidToken(n) {
			return Invalid("selector.nodes", "node id %q is not a valid token", n)
		}
	}
	if r.MaxUnavailable < 1 || r.MaxUnavailable > 1000 {
		return Invalid("max_unavailable", "max_unavailable must be 1..1000, got %d", r.MaxUnavailable)
	}
	if r.Canary < 0 || r.Canary > 1000 {
		return Invalid("canary", "canary must be 0..1000, got %d", r.Canary)
	}
	if bad(r.MinHealthyTime) || r.MinHealthyTime < 0 || r.MinHealthyTime > 3600 {
		return Invalid("min_healthy_time", "min_healthy_time must be 0..3600 seconds, got %v", r.MinHealthyTime)
	}
	if bad(r.HealthyDeadline) || r.HealthyDeadline < 1 || r.HealthyDeadline > 3600 {
		return Invalid("healthy_deadline", "healthy_deadline must be 1..3600 seconds, got %v", r.HealthyDeadline)
	}
	if bad(r.Timeout) || r.Timeout < MinRestartTimeout || r.Timeout > MaxRestartTimeout {
		return Invalid("timeout", "timeout must be %d..%d seconds, got %v", MinRestartTimeout, MaxRestartTimeout, r.Timeout)
	}
	if !r.Reason.Valid() {
		return Invalid("reason", "unknown reason %q", r.Reason).WithDetail("allowed", Reasons)
	}
	if len(r.ConfigVersion) > 64 {
		return Invalid("config_version", "config_version must be at most 64 characters")
	}
	if r.RollID != "" && (!ValidToken(r.RollID) || len(r.RollID) > 64) {
		return Invalid("roll_id", "roll_id must be a valid token of at most 64 characters, got %q", r.RollID)
	}
	if r.MaxAutoResumes < 0 || r.MaxAutoResumes > 100 {
		return Invalid("max_auto_resumes", "max_auto_resumes must be 0..100, got %d", r.MaxAutoResumes)
	}
	return nil
}

// DefaultMaxAutoResumes is how many times a roll resumes by itself.
const DefaultMaxAutoResumes = 3

func bad(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }

// RollPlan is the reply of roll.plan.
type RollPlan struct {
	Type      string    `json:"type"`
	Plan      PlanWaves `json:"plan"`
	BlockedBy []string  `json:"blocked_by"`
	Skipped   []string  `json:"skipped,omitempty"`
}

// PlanWaves is a plan: waves of node ids.
type PlanWaves struct {
	Waves [][]string `json:"waves"`
}

// Roll states.
const (
	RollRunning   = "running"
	RollPaused    = "paused"
	RollCompleted = "completed"
	RollFailed    = "failed"
	RollAborted   = "aborted"
)

// Why a roll is paused (RollStatus.PausedReason). Only PausedNodeFailed
// resumes by itself.
const (
	PausedOperator   = "operator"    // roll.pause
	PausedNodeFailed = "node_failed" // a node failed its restart or missed healthy_deadline
	PausedQuarantine = "quarantine"  // blocked by quarantined or declared-failed nodes
	PausedBreaker    = "breaker"     // the circuit breaker opened
)

// RollNode is one node's place in a roll.
type RollNode struct {
	NodeID    string     `json:"node_id"`
	Phase     Phase      `json:"phase,omitempty"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	HealthyAt *time.Time `json:"healthy_at,omitempty"`
	Duration  float64    `json:"duration,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// RollStatus is the reply of roll.start, roll.status, pause, resume, abort.
type RollStatus struct {
	Type      string      `json:"type"`
	RollID    string      `json:"roll_id"`
	State     string      `json:"state"`
	Done      int         `json:"done"`
	Total     int         `json:"total"`
	Current   []string    `json:"current"`
	Failed    []string    `json:"failed"`
	StartedAt time.Time   `json:"started_at"`
	ETA       *time.Time  `json:"eta"`
	Plan      PlanWaves   `json:"plan"`
	Message   string      `json:"message,omitempty"`
	Nodes     []RollNode  `json:"nodes,omitempty"`
	Request   RollRequest `json:"request"`
	Term      uint64      `json:"term"`
	// PausedReason and PausedSince say why and since when a paused roll is
	// paused; AutoResumes counts its automatic resumes so far.
	PausedReason string     `json:"paused_reason,omitempty"`
	PausedSince  *time.Time `json:"paused_since,omitempty"`
	AutoResumes  int        `json:"auto_resumes"`
}

// RollIDRequest names a roll.
type RollIDRequest struct {
	RollID string `json:"roll_id"`
}

// Validate implements Validator.
func (r *RollIDRequest) Validate() error {
	if !ValidToken(r.RollID) {
		return Invalid("roll_id", "roll_id must be a valid token, got %q", r.RollID)
	}
	return nil
}

// NodesRequest is the body of cluster.nodes.
type NodesRequest struct {
	Group string `json:"group,omitempty"`
}

// Validate implements Validator.
func (r *NodesRequest) Validate() error {
	if r.Group != "" && !ValidToken(r.Group) {
		return Invalid("group", "group %q is not a valid token", r.Group)
	}
	return nil
}

// ClusterNode is one node in cluster.nodes.
type ClusterNode struct {
	Type            string     `json:"type,omitempty"`
	NodeID          string     `json:"node_id"`
	Group           string     `json:"group"`
	Priority        int        `json:"priority"`
	Phase           Phase      `json:"phase"`
	Healthy         bool       `json:"healthy"`
	Answering       bool       `json:"answering"`
	Failed          bool       `json:"failed"`
	LastHeartbeat   *time.Time `json:"last_heartbeat"`
	Version         string     `json:"version"`
	WorkerPID       int        `json:"worker_pid"`
	EscalationLevel int        `json:"escalation_level"`
	Degraded        bool       `json:"degraded"`
	Quarantined     bool       `json:"quarantined"`
	Failures        int        `json:"failures"`
	// From the node's heartbeats: its client sessions and the requests
	// waiting in its buffer; StartedAt is when its worker started serving
	// (the node's uptime is counted from it).
	ActiveConnections int        `json:"active_connections"`
	BufferedRequests  int        `json:"buffered_requests"`
	StartedAt         *time.Time `json:"started_at,omitempty"`
	// From the restart history: the node's last restart and how many it
	// had in the last 24 hours.
	LastRestart     *time.Time `json:"last_restart,omitempty"`
	RestartCount24h int        `json:"restart_count_24h"`
}

// NodeList is the reply of cluster.nodes.
type NodeList struct {
	Type  string        `json:"type"`
	Nodes []ClusterNode `json:"nodes"`
}

// BreakerState is the circuit breaker's state.
type BreakerState struct {
	Type     string     `json:"type,omitempty"`
	Open     bool       `json:"open"`
	Reason   string     `json:"reason"`
	OpenedAt *time.Time `json:"opened_at,omitempty"`
}

// ClusterHealth is the reply of cluster.health.
type ClusterHealth struct {
	Type              string         `json:"type"`
	Healthy           bool           `json:"healthy"`
	Timestamp         time.Time      `json:"timestamp"`
	Leader            string         `json:"leader"`
	Term              uint64         `json:"term"`
	NodesTotal        int            `json:"nodes_total"`
	NodesHealthy      int            `json:"nodes_healthy"`
	NodesByPhase      map[string]int `json:"nodes_by_phase"`
	ActiveRolls       int            `json:"active_rolls"`
	CircuitBreaker    BreakerState   `json:"circuit_breaker"`
	ActiveConnections int            `json:"active_connections"`
	LastRestart       *time.Time     `json:"last_restart"`
	UptimeSeconds     float64        `json:"uptime_seconds"`
	RestartCount24h   int            `json:"restart_count_24h"`
}

// EmptyRequest is the body of operations that take none.
type EmptyRequest struct{}

// Validate implements Validator.
func (*EmptyRequest) Validate() error { return nil }

// ClusterRestart is one restart of cluster.history.
type ClusterRestart struct {
	RestartID   string    `json:"restart_id"`
	NodeID      string    `json:"node_id"`
	Reason      Reason    `json:"reason"`
	Graceful    bool      `json:"graceful"`
	Success     bool      `json:"success"`
	Duration    float64   `json:"duration"`
	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at"`
	RollID      string    `json:"roll_id,omitempty"`
}

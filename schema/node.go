package schema

import (
	"math"
	"time"
)

// Restart timeout bounds and defaults (seconds), from the seed's configuration.
const (
	DefaultRestartTimeout = 30
	MinRestartTimeout     = 10
	MaxRestartTimeout     = 300
)

// RestartRequest is the body of orch.v1.node.<id>.restart.
type RestartRequest struct {
	Graceful      bool    `json:"graceful"`
	PreserveState bool    `json:"preserve_state"`
	Timeout       float64 `json:"timeout"`
	Reason        Reason  `json:"reason"`
	RestartID     string  `json:"restart_id,omitempty"`
}

// DefaultRestartRequest is the request {} means.
func DefaultRestartRequest() RestartRequest {
	return RestartRequest{Graceful: true, PreserveState: true, Timeout: DefaultRestartTimeout, Reason: ReasonManualRequest}
}

// Validate implements Validator.
func (r *RestartRequest) Validate() error {
	if math.IsNaN(r.Timeout) || r.Timeout < MinRestartTimeout || r.Timeout > MaxRestartTimeout {
		return Invalid("timeout", "timeout must be %d..%d seconds, got %v", MinRestartTimeout, MaxRestartTimeout, r.Timeout)
	}
	if !r.Reason.Valid() {
		return Invalid("reason", "unknown reason %q", r.Reason).WithDetail("allowed", Reasons)
	}
	if r.RestartID != "" && !ValidToken(r.RestartID) {
		return Invalid("restart_id", "restart_id must be 1..64 letters, digits, '-' or '_', got %q", r.RestartID)
	}
	return nil
}

// TimeoutDuration is Timeout as a time.Duration.
func (r *RestartRequest) TimeoutDuration() time.Duration { return Seconds(r.Timeout) }

// Seconds converts contract seconds to a duration.
func Seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Secs converts a duration to contract seconds, rounded to the millisecond.
func Secs(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

// StateSummary describes the state carried across a restart.
type StateSummary struct {
	// Preserved: the state was carried across the restart (snapshot +
	// journal). SnapshotWritten: this restart wrote a snapshot first.
	Preserved        bool   `json:"preserved"`
	SnapshotWritten  bool   `json:"snapshot_written"`
	TasksSaved       int    `json:"tasks_saved"`
	TasksRestored    int    `json:"tasks_restored"`
	SessionsRestored int    `json:"sessions_restored"`
	JournalReplayed  int    `json:"journal_replayed"`
	SizeBytes        int64  `json:"size_bytes"`
	Checksum         string `json:"checksum,omitempty"`
	SchemaVersion    int    `json:"schema_version"`
	// MigratedFrom is the schema version the state was read in, when a
	// schema_migration restart migrated it.
	MigratedFrom  int    `json:"migrated_from,omitempty"`
	ConfigVersion string `json:"config_version,omitempty"`
}

// RestartResult is the reply of a restart (success or accepted-then-failed).
type RestartResult struct {
	Type                     string       `json:"type"`
	Success                  bool         `json:"success"`
	RestartID                string       `json:"restart_id"`
	NodeID                   string       `json:"node_id"`
	Graceful                 bool         `json:"graceful"`
	PreserveState            bool         `json:"preserve_state"`
	Timeout                  float64      `json:"timeout"`
	Reason                   Reason       `json:"reason"`
	Phase                    Phase        `json:"phase"`
	Progress                 int          `json:"progress"`
	Message                  string       `json:"message"`
	StartedAt                time.Time    `json:"started_at"`
	CompletedAt              time.Time    `json:"completed_at"`
	Duration                 float64      `json:"duration"`
	OldPID                   int          `json:"old_pid"`
	NewPID                   int          `json:"new_pid"`
	State                    StateSummary `json:"state"`
	BufferedRequestsReplayed int          `json:"buffered_requests_replayed"`
	Errors                   []string     `json:"errors"`
	Error                    *Error       `json:"error,omitempty"`
	FencingToken             uint64       `json:"fencing_token,omitempty"`
}

// HealthRequest is the body of orch.v1.node.<id>.health.
type HealthRequest struct {
	IncludeRebootReadiness  bool `json:"include_reboot_readiness"`
	IncludeConnectionStatus bool `json:"include_connection_status"`
	IncludeDatabaseStatus   bool `json:"include_database_status"`
}

// DefaultHealthRequest is the request {} means.
func DefaultHealthRequest() HealthRequest { return HealthRequest{true, true, true} }

// Validate implements Validator.
func (*HealthRequest) Validate() error { return nil }

// ReadinessCheck is checks.reboot_readiness.
type ReadinessCheck struct {
	Ready   bool           `json:"ready"`
	Issues  []string       `json:"issues"`
	Details map[string]any `json:"details"`
}

// DatabaseCheck is checks.database of health.
type DatabaseCheck struct {
	Connected  bool       `json:"connected"`
	Status     string     `json:"status"`
	LatencyMS  float64    `json:"latency_ms"`
	MeasuredAt *time.Time `json:"measured_at,omitempty"`
}

// ConnectionsCheck is checks.connections of health.
type ConnectionsCheck struct {
	ActiveConnections int        `json:"active_connections"`
	Status            string     `json:"status"`
	MeasuredAt        *time.Time `json:"measured_at,omitempty"`
}

// StateCheck is checks.state of health.
type StateCheck struct {
	SizeBytes      int64      `json:"size_bytes"`
	Tasks          int        `json:"tasks"`
	LastSnapshotAt *time.Time `json:"last_snapshot_at"`
	Backups        int        `json:"backups"`
	MeasuredAt     *time.Time `json:"measured_at,omitempty"`
}

// HealthChecks groups the checks of a health reply.
type HealthChecks struct {
	RebootReadiness *ReadinessCheck   `json:"reboot_readiness,omitempty"`
	Database        *DatabaseCheck    `json:"database,omitempty"`
	Connections     *ConnectionsCheck `json:"connections,omitempty"`
	State           *StateCheck       `json:"state"`
}

// Health is the reply of orch.v1.node.<id>.health.
type Health struct {
	Type          string    `json:"type"`
	Healthy       bool      `json:"healthy"`
	Timestamp     time.Time `json:"timestamp"`
	ServerVersion string    `json:"server_version"`
	NodeID        string    `json:"node_id"`
	Group         string    `json:"group"`
	Phase         Phase     `json:"phase"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	WorkerPID     int       `json:"worker_pid"`
	// MeasuredAt is set when the worker could not answer now: the worker
	// figures are its last reading, taken then.
	MeasuredAt         *time.Time   `json:"measured_at,omitempty"`
	WorkerUptime       float64      `json:"worker_uptime_seconds"`
	ConfigVersion      string       `json:"config_version"`
	StateSchemaVersion int          `json:"state_schema_version"`
	Checks             HealthChecks `json:"checks"`
}

// PrepareRequest is the body of orch.v1.node.<id>.shutdown.prepare.
type PrepareRequest struct {
	CheckActiveTasks       bool `json:"check_active_tasks"`
	CheckDatabaseState     bool `json:"check_database_state"`
	CheckClientConnections bool `json:"check_client_connections"`
}

// DefaultPrepareRequest is the request {} means.
func DefaultPrepareRequest() PrepareRequest { return PrepareRequest{true, true, true} }

// Validate implements Validator.
func (*PrepareRequest) Validate() error { return nil }

// ActiveTasksCheck is checks.active_tasks of shutdown readiness.
type ActiveTasksCheck struct {
	Count       int    `json:"count"`
	Suspendable bool   `json:"suspendable"`
	Status      string `json:"status"` // ready, waiting, unknown
	// Reason says what status rests on: the step a drain would wait for,
	// or the one it would abandon.
	Reason string `json:"reason,omitempty"`
}

// DatabaseReadiness is checks.database of shutdown readiness.
type DatabaseReadiness struct {
	TransactionsPending int    `json:"transactions_pending"`
	ConnectionsOpen     int    `json:"connections_open"`
	Status              string `json:"status"`
}

// ClientReadiness is checks.client_connections of shutdown readiness.
type ClientReadiness struct {
	ActiveConnections int    `json:"active_connections"`
	Notifiable        bool   `json:"notifiable"`
	Status            string `json:"status"`
}

// ShutdownReadiness is the reply of shutdown.prepare.
type ShutdownReadiness struct {
	Type             string    `json:"type"`
	ReadyForShutdown bool      `json:"ready_for_shutdown"`
	BlockingIssues   []string  `json:"blocking_issues"`
	Timestamp        time.Time `json:"timestamp"`
	Checks           struct {
		ActiveTasks       *ActiveTasksCheck  `json:"active_tasks,omitempty"`
		Database          *DatabaseReadiness `json:"database,omitempty"`
		ClientConnections *ClientReadiness   `json:"client_connections,omitempty"`
	} `json:"checks"`
}

// StatusRequest is the body of orch.v1.node.<id>.restart.status.
type StatusRequest struct {
	IncludeHistory      bool `json:"include_history"`
	IncludeErrorDetails bool `json:"include_error_details"`
	// Limit bounds recent_restarts (10, 1..1000).
	Limit int `json:"limit"`
}

// DefaultStatusRequest is the request {} means.
func DefaultStatusRequest() StatusRequest { return StatusRequest{IncludeErrorDetails: true, Limit: 10} }

// Validate implements Validator.
func (r *StatusRequest) Validate() error {
	if r.Limit < 1 || r.Limit > 1000 {
		return Invalid("limit", "limit must be 1..1000, got %d", r.Limit)
	}
	return nil
}

// CurrentStatus is current_status of restart.status.
type CurrentStatus struct {
	Phase               Phase      `json:"phase"`
	Progress            int        `json:"progress"`
	Message             string     `json:"message"`
	RestartID           string     `json:"restart_id,omitempty"`
	StartedAt           *time.Time `json:"started_at"`
	EstimatedCompletion *time.Time `json:"estimated_completion"`
	Errors              []string   `json:"errors,omitempty"`
	ErrorCount          *int       `json:"error_count,omitempty"`
	MaintenanceMode     bool       `json:"maintenance_mode"`
}

// HistoryEntry is one restart of recent_restarts.
type HistoryEntry struct {
	RestartID  string    `json:"restart_id"`
	Timestamp  time.Time `json:"timestamp"`
	Reason     Reason    `json:"reason"`
	Graceful   bool      `json:"graceful"`
	Success    bool      `json:"success"`
	Duration   float64   `json:"duration"`
	OldPID     int       `json:"old_pid"`
	NewPID     int       `json:"new_pid"`
	Errors     []string  `json:"errors,omitempty"`
	ErrorCount *int      `json:"error_count,omitempty"`
}

// History is history of restart.status.
type History struct {
	RecentRestarts        []HistoryEntry `json:"recent_restarts"`
	TotalRestarts         int            `json:"total_restarts"`
	LastSuccessfulRestart *time.Time     `json:"last_successful_restart"`
	LastFailedRestart     *time.Time     `json:"last_failed_restart"`
}

// RestartStatus is the reply of restart.status.
type RestartStatus struct {
	Type          string        `json:"type"`
	Timestamp     time.Time     `json:"timestamp"`
	NodeID        string        `json:"node_id"`
	CurrentStatus CurrentStatus `json:"current_status"`
	History       *History      `json:"history,omitempty"`
}

// ReconnectTestRequest is the body of orch.v1.node.<id>.reconnect.test.
type ReconnectTestRequest struct {
	SessionID                string `json:"session_id,omitempty"`
	IncludeBufferStatus      bool   `json:"include_buffer_status"`
	IncludeReconnectionStats bool   `json:"include_reconnection_stats"`
}

// DefaultReconnectTestRequest is the request {} means.
func DefaultReconnectTestRequest() ReconnectTestRequest {
	return ReconnectTestRequest{IncludeBufferStatus: true, IncludeReconnectionStats: true}
}

// Validate implements Validator.
func (r *ReconnectTestRequest) Validate() error {
	if r.SessionID != "" && !ValidToken(r.SessionID) {
		return Invalid("session_id", "session_id must be 1..64 letters, digits, '-' or '_', got %q", r.SessionID)
	}
	return nil
}

// SessionsResult is results.all_sessions of reconnect.test.
type SessionsResult struct {
	TotalSessions     int    `json:"total_sessions"`
	ReachableSessions int    `json:"reachable_sessions"`
	ReconnectCapable  int    `json:"reconnect_capable"`
	Status            string `json:"status"`
}

// SessionTest is results.session_test of reconnect.test.
type SessionTest struct {
	SessionID        string     `json:"session_id"`
	Known            bool       `json:"known"`
	Reachable        bool       `json:"reachable"`
	ReconnectCapable bool       `json:"reconnect_capable"`
	BufferedRequests int        `json:"buffered_requests"`
	LastActivity     *time.Time `json:"last_activity,omitempty"`
	PingMS           float64    `json:"ping_ms,omitempty"`
	Status           string     `json:"status"`
}

// BufferStatus is results.buffer_status of reconnect.test.
type BufferStatus struct {
	TotalBufferedRequests int            `json:"total_buffered_requests"`
	SessionsWithBuffers   int            `json:"sessions_with_buffers"`
	PerSession            map[string]int `json:"per_session,omitempty"`
	Status                string         `json:"status"`
}

// ReconnectionStats is results.reconnection_stats of reconnect.test.
type ReconnectionStats struct {
	SuccessfulReconnections int     `json:"successful_reconnections"`
	FailedReconnections     int     `json:"failed_reconnections"`
	AverageReconnectionTime float64 `json:"average_reconnection_time"`
	Status                  string  `json:"status"`
}

// ReconnectTest is the reply of reconnect.test.
type ReconnectTest struct {
	Type          string    `json:"type"`
	TestCompleted bool      `json:"test_completed"`
	OverallStatus string    `json:"overall_status"`
	Timestamp     time.Time `json:"timestamp"`
	Results       struct {
		AllSessions       *SessionsResult    `json:"all_sessions,omitempty"`
		SessionTest       *SessionTest       `json:"session_test,omitempty"`
		BufferStatus      *BufferStatus      `json:"buffer_status,omitempty"`
		ReconnectionStats *ReconnectionStats `json:"reconnection_stats,omitempty"`
	} `json:"results"`
}

// Check statuses.
const (
	StatusPass    = "pass"
	StatusPartial = "partial"
	StatusFail    = "fail"
)

// Heartbeat is published on orch.v1.hb.<node_id>.
type Heartbeat struct {
	Type          string    `json:"type"`
	NodeID        string    `json:"node_id"`
	Group         string    `json:"group"`
	Priority      int       `json:"priority"`
	Phase         Phase     `json:"phase"`
	Healthy       bool      `json:"healthy"`
	Seq           uint64    `json:"seq"`
	PID           int       `json:"pid"`
	WorkerPID     int       `json:"worker_pid"`
	Version       string    `json:"version"`
	Load          float64   `json:"load"`
	ConfigVersion string    `json:"config_version,omitempty"`
	Timestamp     time.Time `json:"timestamp"`
	// ActiveConnections: the worker's client sessions; BufferedRequests:
	// requests waiting in the node's buffer; WorkerStartedAt: when the
	// serving worker started (zero while none serves).
	ActiveConnections int        `json:"active_connections"`
	BufferedRequests  int        `json:"buffered_requests"`
	WorkerStartedAt   *time.Time `json:"worker_started_at,omitempty"`
}

// NodeInfo is a node's entry in the ORCH_NODES registry.
type NodeInfo struct {
	Type         string    `json:"type"`
	NodeID       string    `json:"node_id"`
	Group        string    `json:"group"`
	Priority     int       `json:"priority"`
	Version      string    `json:"version"`
	Host         string    `json:"host"`
	PID          int       `json:"pid"`
	Instance     string    `json:"instance"`
	StartedAt    time.Time `json:"started_at"`
	FencingToken uint64    `json:"fencing_token,omitempty"`
}

// PhaseEvent is published on orch.v1.evt.node.<id>.phase.
type PhaseEvent struct {
	Type      string    `json:"type"`
	NodeID    string    `json:"node_id"`
	RestartID string    `json:"restart_id"`
	Phase     Phase     `json:"phase"`
	Progress  int       `json:"progress"`
	Message   string    `json:"message,omitempty"`
	Timestamp time.Time `json:"timestamp"`
}

// Notice is published to clients on orch.v1.notify.<node_id>.
type Notice struct {
	Type            string    `json:"type"`
	Event           string    `json:"event"` // server_restart_pending | server_restart_complete
	NodeID          string    `json:"node_id"`
	RestartID       string    `json:"restart_id,omitempty"`
	Reason          Reason    `json:"reason,omitempty"`
	ExpectedSeconds float64   `json:"expected_seconds,omitempty"`
	Timestamp       time.Time `json:"timestamp"`
}

// Notice events.
const (
	NoticeRestartPending  = "server_restart_pending"
	NoticeRestartComplete = "server_restart_complete"
)

// Audit is published on orch.v1.audit.<operation>.
type Audit struct {
	Type       string         `json:"type"`
	Operation  string         `json:"operation"`
	NodeID     string         `json:"node_id,omitempty"`
	User       string         `json:"user"`
	Source     string         `json:"source,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Success    bool           `json:"success"`
	Error      *Error         `json:"error,omitempty"`
	Timestamp  time.Time      `json:"timestamp"`
}

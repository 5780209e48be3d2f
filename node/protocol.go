package node

import (
	"encoding/json"
	"os"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// EnvWorker carries the worker's settings (JSON) from supervisor to worker;
// its presence is what makes the binary run as a worker.
const EnvWorker = "RESTARTCOORD_WORKER"

// workerFD is the file descriptor of the worker's end of the channel.
const workerFD = 3

// IsWorker reports whether this process was started as a node worker.
// main (and a test binary's TestMain) calls RunWorker when it is.
func IsWorker() bool { return os.Getenv(EnvWorker) != "" }

// NodeConfig is a node's configuration: a file or an ORCH_CONFIG entry.
type NodeConfig struct {
	ConfigVersion string         `json:"config_version"`
	Settings      map[string]any `json:"settings,omitempty"`
	// FailStart makes the worker fail at start (for tests of failed
	// restarts and of the escalation ladder; never set in production).
	FailStart bool `json:"fail_start,omitempty"`
}

// workerEnv is what a worker is told at start.
type workerEnv struct {
	NodeID           string          `json:"node_id"`
	Instance         string          `json:"instance"` // the supervisor's lease value
	NATS             bus.ConnOptions `json:"nats"`
	StateSchema      int             `json:"state_schema"`
	Config           NodeConfig      `json:"config"`
	Reason           schema.Reason   `json:"reason"`
	RestartID        string          `json:"restart_id"`
	RestoreSnapshot  string          `json:"restore_snapshot,omitempty"`
	SuspendTimeout   time.Duration   `json:"suspend_timeout"`
	SnapshotInterval time.Duration   `json:"snapshot_interval"`
	KeepSnapshots    int             `json:"keep_snapshots"`
	MaxStateSize     int64           `json:"max_state_size"`
	BufferExpiration time.Duration   `json:"buffer_expiration"`
	ReplyKeep        time.Duration   `json:"reply_keep"`
	CleanupInterval  time.Duration   `json:"cleanup_interval"`
	SessionIdle      time.Duration   `json:"session_idle"`
	Version          string          `json:"version"`
	// ReconnectWindow is how long after this worker is ready a client of
	// the restart may take to come back (60 s); RestartStartedAt is when the
	// restart that starts this worker began (zero at a supervisor's first
	// start), from which the clients it counts are those active in the
	// window before; ReconnectCarry is the reconnection window of the
	// previous worker when it ended before its window closed, merged into
	// this one (see reconnect in sessions.go).
	ReconnectWindow  time.Duration     `json:"reconnect_window"`
	RestartStartedAt time.Time         `json:"restart_started_at"`
	ReconnectCarry   *reconnectReading `json:"reconnect_carry,omitempty"`
}

// readyInfo is the worker's report once it serves.
type readyInfo struct {
	PID              int                  `json:"pid"`
	TasksRestored    int                  `json:"tasks_restored"`
	SessionsRestored int                  `json:"sessions_restored"`
	JournalReplayed  int                  `json:"journal_replayed"`
	Snapshot         *schema.SnapshotInfo `json:"snapshot,omitempty"`
	SchemaVersion    int                  `json:"schema_version"`
	MigratedFrom     int                  `json:"migrated_from,omitempty"`
	ConfigVersion    string               `json:"config_version"`
	BufferedPending  int                  `json:"buffered_pending"`
	Warnings         []string             `json:"warnings,omitempty"`
	ReadyAt          time.Time            `json:"ready_at"`
}

// phaseMsg is a phase change the worker reports.
type phaseMsg struct {
	Phase   schema.Phase `json:"phase"`
	Message string       `json:"message,omitempty"`
}

// drainRequest asks the worker to stop gracefully.
type drainRequest struct {
	PreserveState   bool          `json:"preserve_state"`
	Reason          schema.Reason `json:"reason"`
	RestartID       string        `json:"restart_id"`
	ExpectedSeconds float64       `json:"expected_seconds"`
	Trigger         string        `json:"trigger"`
}

// drainResult is the worker's answer before it exits.
type drainResult struct {
	TasksSaved     int                  `json:"tasks_saved"`
	SessionsSaved  int                  `json:"sessions_saved"`
	Snapshot       *schema.SnapshotInfo `json:"snapshot,omitempty"`
	JobsSuspended  int                  `json:"jobs_suspended"`
	SuspendSeconds float64              `json:"suspend_seconds"`
	Warnings       []string             `json:"warnings,omitempty"`
}

// workerStats is a measured reading of the worker.
type workerStats struct {
	PID            int                  `json:"pid"`
	StartedAt      time.Time            `json:"started_at"`
	Ready          bool                 `json:"ready"`
	Maintenance    bool                 `json:"maintenance"`
	Tasks          int                  `json:"tasks"`
	ActiveTasks    int                  `json:"active_tasks"`
	RunningJobs    int                  `json:"running_jobs"`
	Sessions       []schema.Session     `json:"sessions"`
	ActiveSessions int                  `json:"active_sessions"`
	PendingWrites  int                  `json:"pending_writes"`
	NATSConnected  bool                 `json:"nats_connected"`
	ConfigVersion  string               `json:"config_version"`
	SchemaVersion  int                  `json:"schema_version"`
	LastSnapshot   *schema.SnapshotInfo `json:"last_snapshot,omitempty"`
	Backups        int                  `json:"backups"`
	StateSizeBytes int64                `json:"state_size_bytes"`
	Expired        int                  `json:"expired"`
	// Reconnection is the reconnection window of the restart that started
	// this worker (see reconnect in sessions.go).
	Reconnection *reconnectReading `json:"reconnection,omitempty"`
	// StepEnds: for each job running a step, when that step ends; a drain
	// waits for these (up to SuspendTimeout) before suspending.
	StepEnds   map[string]time.Time `json:"step_ends,omitempty"`
	MeasuredAt time.Time            `json:"measured_at"`
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

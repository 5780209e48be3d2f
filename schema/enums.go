package schema

import "slices"

// Phase is a step of the restart state machine.
type Phase string

// Phases, in the order a graceful restart goes through them.
const (
	PhaseIdle                Phase = "idle"
	PhasePreparing           Phase = "preparing"
	PhaseMaintenanceMode     Phase = "maintenance_mode"
	PhaseSuspendingTasks     Phase = "suspending_tasks"
	PhaseSerializingState    Phase = "serializing_state"
	PhaseClosingConnections  Phase = "closing_connections"
	PhaseStopping            Phase = "stopping"
	PhaseStartingProcess     Phase = "starting_process"
	PhaseLoadingState        Phase = "loading_state"
	PhaseRestoringState      Phase = "restoring_state"
	PhaseResumingTasks       Phase = "resuming_tasks"
	PhaseEnablingConnections Phase = "enabling_connections"
	PhaseComplete            Phase = "complete"
	PhaseFailed              Phase = "failed"
)

// Phases lists the phases in order (failed last).
var Phases = []Phase{PhaseIdle, PhasePreparing, PhaseMaintenanceMode, PhaseSuspendingTasks,
	PhaseSerializingState, PhaseClosingConnections, PhaseStopping, PhaseStartingProcess,
	PhaseLoadingState, PhaseRestoringState, PhaseResumingTasks, PhaseEnablingConnections,
	PhaseComplete, PhaseFailed}

// Progress is the percentage of a restart reached at phase p.
func (p Phase) Progress() int {
	switch p {
	case PhaseIdle:
		return 0
	case PhaseComplete, PhaseFailed:
		return 100
	}
	i := slices.Index(Phases, p)
	if i < 0 {
		return 0
	}
	return i * 100 / int(slices.Index(Phases, PhaseComplete))
}

// Reason is why a restart happens.
type Reason string

// Reasons of the contract.
const (
	ReasonConfigurationUpdate Reason = "configuration_update"
	ReasonSchemaMigration     Reason = "schema_migration"
	ReasonErrorRecovery       Reason = "error_recovery"
	ReasonManualRequest       Reason = "manual_request"
	ReasonEmergencyShutdown   Reason = "emergency_shutdown"
	ReasonRollingRestart      Reason = "rolling_restart"
	ReasonCrashRecovery       Reason = "crash_recovery"
	ReasonDRTest              Reason = "dr_test"
)

// Reasons lists every valid reason.
var Reasons = []Reason{ReasonConfigurationUpdate, ReasonSchemaMigration, ReasonErrorRecovery,
	ReasonManualRequest, ReasonEmergencyShutdown, ReasonRollingRestart, ReasonCrashRecovery, ReasonDRTest}

// Valid reports whether r is a reason of the contract.
func (r Reason) Valid() bool { return slices.Contains(Reasons, r) }

// TaskStatus is the status of a task.
type TaskStatus string

// Task statuses.
const (
	TaskPending   TaskStatus = "pending"
	TaskActive    TaskStatus = "active"
	TaskSuspended TaskStatus = "suspended"
	TaskCompleted TaskStatus = "completed"
	TaskFailed    TaskStatus = "failed"
)

// TaskStatuses lists every task status.
var TaskStatuses = []TaskStatus{TaskPending, TaskActive, TaskSuspended, TaskCompleted, TaskFailed}

// Valid reports whether s is a task status.
func (s TaskStatus) Valid() bool { return slices.Contains(TaskStatuses, s) }

// Terminal reports whether no further change is allowed.
func (s TaskStatus) Terminal() bool { return s == TaskCompleted || s == TaskFailed }

// Severity of an alert.
type Severity string

// Severities.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

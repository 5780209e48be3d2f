package schema

import (
	"fmt"
	"slices"
	"time"
)

// Alert kinds (CONTRACT.md's alerts, with the severity each is raised at in
// AlertKinds). A condition that clears publishes the same kind again with
// Status resolved, so a receiver can close what it opened.
const (
	AlertRestartFailed        = "restart_failed"
	AlertHealthCheckFailed    = "health_check_failed"
	AlertSLOViolation         = "slo_violation"
	AlertStateLoss            = "state_loss"
	AlertQuarantine           = "escalation_quarantine"
	AlertBreakerOpen          = "circuit_breaker_open"
	AlertRestartFrequency     = "restart_frequency"
	AlertSlowRestart          = "slow_restart"
	AlertReconnectionRate     = "reconnection_rate"
	AlertBufferCapacity       = "buffer_capacity"
	AlertDegraded             = "escalation_degraded"
	AlertRollPaused           = "roll_paused"
	AlertBackupAge            = "backup_age"
	AlertStateSize            = "state_size"
	AlertMaintenanceDue       = "maintenance_due"
	AlertLogSize              = "log_size"
	AlertBreakerClosed        = "circuit_breaker_closed"
	AlertNodeRecovered        = "node_recovered"
	AlertTest                 = "test" // `restartcoord alerts test`: never published, sent to one receiver
	AlertStatusFiring         = "firing"
	AlertStatusResolved       = "resolved"
	maxAlertFingerprintLength = 256
)

// AlertKinds maps every alert kind to its severity.
var AlertKinds = map[string]Severity{
	AlertRestartFailed: SeverityCritical, AlertHealthCheckFailed: SeverityCritical, AlertSLOViolation: SeverityCritical,
	AlertStateLoss: SeverityCritical, AlertQuarantine: SeverityCritical, AlertBreakerOpen: SeverityCritical,
	AlertRestartFrequency: SeverityWarning, AlertSlowRestart: SeverityWarning, AlertReconnectionRate: SeverityWarning,
	AlertBufferCapacity: SeverityWarning, AlertDegraded: SeverityWarning, AlertRollPaused: SeverityWarning,
	AlertBackupAge: SeverityInfo, AlertStateSize: SeverityInfo, AlertMaintenanceDue: SeverityInfo, AlertLogSize: SeverityInfo,
	AlertBreakerClosed: SeverityInfo, AlertNodeRecovered: SeverityInfo, AlertTest: SeverityInfo,
}

// Severities lists every severity, most urgent first.
var Severities = []Severity{SeverityCritical, SeverityWarning, SeverityInfo}

// Valid reports whether s is a severity.
func (s Severity) Valid() bool { return slices.Contains(Severities, s) }

// Alert is one alert as published on orch.v1.alert.<severity>.<kind> and
// kept in ORCH_ALERTS. Status is firing or resolved (empty in alerts stored
// before it existed: read as firing).
type Alert struct {
	Type      string         `json:"type"`
	AlertID   string         `json:"alert_id"`
	Severity  Severity       `json:"severity"`
	Kind      string         `json:"kind"`
	Status    string         `json:"status,omitempty"`
	NodeID    string         `json:"node_id,omitempty"`
	RollID    string         `json:"roll_id,omitempty"`
	Message   string         `json:"message"`
	Details   map[string]any `json:"details,omitempty"`
	Timestamp time.Time      `json:"timestamp"`
	Source    string         `json:"source,omitempty"` // the coordinator that raised it, when one did
}

// Firing reports whether the alert opens (or repeats) a condition.
func (a Alert) Firing() bool { return a.Status != AlertStatusResolved }

// Fingerprint names the condition an alert is about: its kind and the node
// or roll it concerns (or neither, for a cluster-wide condition). Alerts with
// the same fingerprint are one group: notified once, then resolved.
func (a Alert) Fingerprint() string {
	fp := a.Kind
	switch {
	case a.NodeID != "":
		fp += "/node/" + a.NodeID
	case a.RollID != "":
		fp += "/roll/" + a.RollID
	}
	if len(fp) > maxAlertFingerprintLength {
		fp = fp[:maxAlertFingerprintLength]
	}
	return fp
}

// Validate checks an alert read from the stream or a subject.
func (a Alert) Validate() error {
	switch {
	case a.Kind == "":
		return fmt.Errorf("alert: no kind")
	case !a.Severity.Valid():
		return fmt.Errorf("alert %s: severity %q is not one of critical, warning, info", a.Kind, a.Severity)
	case a.Status != "" && a.Status != AlertStatusFiring && a.Status != AlertStatusResolved:
		return fmt.Errorf("alert %s: status %q is not firing or resolved", a.Kind, a.Status)
	}
	return nil
}

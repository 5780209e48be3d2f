package schema

import (
	"strings"
	"time"
)

// Alert operations (additions to CONTRACT.md, in docs/API.md): on the
// coordinator leader, which delivers alerts.
const (
	OpAlerts          = "alerts"
	OpAlertsSilence   = "alerts.silence"
	OpAlertsUnsilence = "alerts.unsilence"
	OpAlertsTest      = "alerts.test"
	OpAlertsConfigSet = "alerts.config.set"
	OpAlertsConfigGet = "alerts.config.get"
)

// Reply types of the alert operations.
const (
	TypeAlertsStatus = typePrefix + "alerts"
	TypeSilence      = typePrefix + "silence"
	TypeAlertsTest   = typePrefix + "alerts_test"
	TypeAlertsConfig = typePrefix + "alerts_config"
)

// Silence bounds.
const (
	MaxSilence       = 30 * 24 * time.Hour
	MaxSilenceReason = 512
	MaxAlertsConfig  = 1 << 20
)

// SilenceRequest (alerts.silence): hold notifications of kind (on one node,
// or on every node) for Duration seconds.
type SilenceRequest struct {
	Kind     string  `json:"kind"`
	NodeID   string  `json:"node_id,omitempty"`
	Duration float64 `json:"duration"` // seconds
	Reason   string  `json:"reason"`
}

// Validate implements Validator.
func (r *SilenceRequest) Validate() error {
	if _, ok := AlertKinds[r.Kind]; !ok || r.Kind == AlertTest {
		return Invalid("kind", "kind %q is not an alert kind (CONTRACT.md's alerts)", r.Kind)
	}
	if r.NodeID != "" && !ValidToken(r.NodeID) {
		return Invalid("node_id", "node id %q: letters, digits, '-', '_'", r.NodeID)
	}
	if bad(r.Duration) || r.Duration < 1 || r.Duration > MaxSilence.Seconds() {
		return Invalid("duration", "duration must be 1..%.0f seconds (30 days), got %v", MaxSilence.Seconds(), r.Duration)
	}
	if strings.TrimSpace(r.Reason) == "" || len(r.Reason) > MaxSilenceReason {
		return Invalid("reason", "reason is required, at most %d bytes", MaxSilenceReason)
	}
	return nil
}

// UnsilenceRequest (alerts.unsilence) ends a silence early.
type UnsilenceRequest struct {
	SilenceID string `json:"silence_id"`
}

// Validate implements Validator.
func (r *UnsilenceRequest) Validate() error {
	if !ValidToken(r.SilenceID) {
		return Invalid("silence_id", "silence id %q is not one (see `restartcoord alerts`)", r.SilenceID)
	}
	return nil
}

// AlertsTestRequest (alerts.test) sends a test notification to one receiver.
type AlertsTestRequest struct {
	Receiver string `json:"receiver"`
}

// Validate implements Validator.
func (r *AlertsTestRequest) Validate() error {
	if !ValidToken(r.Receiver) {
		return Invalid("receiver", "receiver %q: a receiver's name from the alerts configuration", r.Receiver)
	}
	return nil
}

// AlertsConfigSet (alerts.config.set) replaces the delivery configuration:
// the file's text, YAML or JSON (docs/ALERTS.md). Secrets are referenced,
// never inline.
type AlertsConfigSet struct {
	Config string `json:"config"`
}

// Validate implements Validator (the configuration itself is validated by
// the coordinator, every problem at once).
func (r *AlertsConfigSet) Validate() error {
	if strings.TrimSpace(r.Config) == "" {
		return Invalid("config", "config is empty")
	}
	if len(r.Config) > MaxAlertsConfig {
		return Invalid("config", "config is %d bytes, at most %d", len(r.Config), MaxAlertsConfig)
	}
	return nil
}

// AlertsConfig is the reply of alerts.config.get and alerts.config.set.
type AlertsConfig struct {
	Type      string            `json:"type"`
	Source    string            `json:"source"` // "store" (set with alerts config set), "flags", "none"
	Config    string            `json:"config"` // as given (secrets are references)
	Receivers []AlertReceiver   `json:"receivers"`
	Problems  map[string]string `json:"problems,omitempty"` // receiver -> why it cannot deliver (a secret not readable)
}

// AlertReceiver is one configured receiver.
type AlertReceiver struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

// Silence is a silence as listed and as alerts.silence answers it.
type Silence struct {
	Type      string    `json:"type,omitempty"`
	SilenceID string    `json:"silence_id"`
	Kind      string    `json:"kind"`
	NodeID    string    `json:"node_id,omitempty"`
	Until     time.Time `json:"until"`
	Reason    string    `json:"reason"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// AlertGroup is one condition (fingerprint) delivery tracks.
type AlertGroup struct {
	Fingerprint  string    `json:"fingerprint"`
	Kind         string    `json:"kind"`
	Severity     Severity  `json:"severity"`
	Status       string    `json:"status"`
	NodeID       string    `json:"node_id,omitempty"`
	RollID       string    `json:"roll_id,omitempty"`
	Message      string    `json:"message"`
	Count        int       `json:"count"`
	FirstSeen    time.Time `json:"first_seen"`
	LastNotified time.Time `json:"last_notified,omitzero"`
	SilencedBy   string    `json:"silenced_by,omitempty"`
	Receivers    []string  `json:"receivers"`
}

// AlertDelivery is one notification to one receiver.
type AlertDelivery struct {
	NotificationID string    `json:"notification_id"`
	Receiver       string    `json:"receiver"`
	Fingerprint    string    `json:"fingerprint"`
	Status         string    `json:"status"` // notification: firing or resolved
	State          string    `json:"state"`  // pending, delivered, failed
	Attempts       int       `json:"attempts"`
	LastError      string    `json:"last_error,omitempty"`
	NextAttempt    time.Time `json:"next_attempt,omitzero"`
	CreatedAt      time.Time `json:"created_at"`
	DoneAt         time.Time `json:"done_at,omitzero"`
}

// AlertsStatus is the reply of alerts: what fires, what was sent where,
// what failed, and the silences.
type AlertsStatus struct {
	Type       string          `json:"type"`
	Leader     string          `json:"leader"`
	Source     string          `json:"source"`
	Receivers  []AlertReceiver `json:"receivers"`
	Firing     []AlertGroup    `json:"firing"`
	Deliveries []AlertDelivery `json:"deliveries"`
	Failures   []AlertDelivery `json:"failures"`
	Silences   []Silence       `json:"silences"`
}

// AlertsTestResult is the reply of alerts.test.
type AlertsTestResult struct {
	Type           string  `json:"type"`
	Receiver       string  `json:"receiver"`
	Delivered      bool    `json:"delivered"`
	NotificationID string  `json:"notification_id"`
	Error          string  `json:"error,omitempty"`
	DurationMs     float64 `json:"duration_ms"`
}

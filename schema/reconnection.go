package schema

import "time"

// EventReconnection is the kind of the event a node's worker publishes
// (orch.v1.evt.node.<node_id>.reconnection, kept in ORCH_EVENTS) once the
// reconnection window after it started has closed: which of the clients
// that had a session before the restart came back in time.
const EventReconnection = "reconnection"

// ReconnectWindow is the seed's "clients reconnect within 60 seconds".
const ReconnectWindow = 60 * time.Second

// ReconnectionOutcome is one restart's reconnection record. Expected is
// the clients with a session before the restart; each is either
// Reconnected (answered within the window; Seconds sums the times from the
// worker being ready to that answer) or Failed (not answered in time,
// never back, or its request expired in the buffer).
type ReconnectionOutcome struct {
	Type          string    `json:"type"`
	NodeID        string    `json:"node_id"`
	RestartID     string    `json:"restart_id,omitempty"`
	ReadyAt       time.Time `json:"ready_at"`
	ClosedAt      time.Time `json:"closed_at"`
	Window        float64   `json:"window"` // seconds
	Expected      int       `json:"expected"`
	Reconnected   int       `json:"reconnected"`
	Failed        int       `json:"failed"`
	Seconds       float64   `json:"seconds"`
	FailedClients []string  `json:"failed_clients,omitempty"` // at most 100, sorted
}

// TypeReconnectionOutcome is the type of ReconnectionOutcome.
const TypeReconnectionOutcome = typePrefix + "reconnection_outcome"

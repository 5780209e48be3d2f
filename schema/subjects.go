package schema

import (
	"fmt"
	"regexp"
)

// Subject prefixes and names of the contract. Every subject the system uses is
// built by a function of this file, nowhere else.
const (
	Prefix = "orch.v1"

	// Streams.
	StreamRequests = "ORCH_REQUESTS"
	StreamJournal  = "ORCH_JOURNAL"
	StreamEvents   = "ORCH_EVENTS"
	StreamAlerts   = "ORCH_ALERTS"
	StreamAudit    = "ORCH_AUDIT"

	// Key-value buckets.
	BucketNodes  = "ORCH_NODES"  // node registry: auto-join, one key per node id
	BucketLeases = "ORCH_LEASES" // per-key TTL leases: node ownership, coordinator leader
	BucketConfig = "ORCH_CONFIG" // node configuration, one key per node id (or group)
	BucketCoord  = "ORCH_COORD"  // coordinator state: rolls, escalation per node, the breaker

	// Object stores.
	ObjectSnapshots = "ORCH_SNAPSHOTS"

	// Micro service names.
	ServiceNode        = "orch-node"
	ServiceCoordinator = "orch-coordinator"

	// Headers.
	HeaderReplyTo      = "Orch-Reply-To"
	HeaderFencingToken = "Orch-Fencing-Token"
	HeaderMsgID        = "Nats-Msg-Id"
	HeaderRequestInfo  = "Nats-Request-Info"
)

// Node control operations: the last tokens of orch.v1.node.<node_id>.<op>.
const (
	OpRestart       = "restart"
	OpHealth        = "health"
	OpPrepare       = "shutdown.prepare"
	OpRestartStatus = "restart.status"
	OpReconnectTest = "reconnect.test"
	OpStateBackup   = "state.backup"
	OpStateBackups  = "state.backups"
	OpStateRestore  = "state.restore"
	OpReply         = "reply" // fetch a kept reply by request id
	OpClients       = "clients"
)

// NodeOps lists every node control operation, in the order the micro service
// registers them.
var NodeOps = []string{OpRestart, OpHealth, OpPrepare, OpRestartStatus, OpReconnectTest,
	OpStateBackup, OpStateBackups, OpStateRestore, OpReply, OpClients}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidToken reports whether s can be a node id or client id: a NATS subject
// token of letters, digits, '-' and '_', 1 to 64 characters.
func ValidToken(s string) bool { return tokenRE.MatchString(s) }

// CheckToken returns an INVALID_PARAMETERS error naming field when s is not a
// valid token.
func CheckToken(field, s string) error {
	if !ValidToken(s) {
		return Invalid(field, "%s must be 1..64 letters, digits, '-' or '_', got %q", field, s)
	}
	return nil
}

// NodeSubject is the control subject of operation op on node nodeID.
func NodeSubject(nodeID, op string) string { return fmt.Sprintf("%s.node.%s.%s", Prefix, nodeID, op) }

// HeartbeatSubject is where node nodeID publishes its heartbeats.
func HeartbeatSubject(nodeID string) string { return Prefix + ".hb." + nodeID }

// HeartbeatWildcard matches every node's heartbeat.
const HeartbeatWildcard = Prefix + ".hb.*"

// NodeEventSubject is a restart lifecycle event of node nodeID.
func NodeEventSubject(nodeID, kind string) string {
	return fmt.Sprintf("%s.evt.node.%s.%s", Prefix, nodeID, kind)
}

// RollEventSubject is a progress event of roll rollID.
func RollEventSubject(rollID, kind string) string {
	return fmt.Sprintf("%s.evt.roll.%s.%s", Prefix, rollID, kind)
}

// AlertSubject is where alerts of a severity and kind are published.
func AlertSubject(severity Severity, kind string) string {
	return fmt.Sprintf("%s.alert.%s.%s", Prefix, severity, kind)
}

// AuditSubject records one control operation.
func AuditSubject(operation string) string { return Prefix + ".audit." + operation }

// RequestSubject is the buffered request subject of client clientID on node nodeID.
func RequestSubject(nodeID, clientID string) string {
	return fmt.Sprintf("%s.req.%s.%s", Prefix, nodeID, clientID)
}

// RequestFilter matches every buffered request of node nodeID.
func RequestFilter(nodeID string) string { return fmt.Sprintf("%s.req.%s.>", Prefix, nodeID) }

// JournalSubject holds the task journal of node nodeID.
func JournalSubject(nodeID string) string { return Prefix + ".journal." + nodeID }

// NotifySubject carries restart notices to the clients of node nodeID.
func NotifySubject(nodeID string) string { return Prefix + ".notify." + nodeID }

// ClientPingSubject is answered by a live client.
func ClientPingSubject(clientID string) string {
	return fmt.Sprintf("%s.client.%s.ping", Prefix, clientID)
}

// Event kinds on NodeEventSubject.
const (
	EventPhase         = "phase"
	EventRestartResult = "restart_result"
	EventJobStep       = "job_step"
)

// Stream subject filters.
const (
	RequestsSubjects = Prefix + ".req.>"
	JournalSubjects  = Prefix + ".journal.>"
	EventsSubjects   = Prefix + ".evt.>"
	AlertsSubjects   = Prefix + ".alert.>"
	AuditSubjects    = Prefix + ".audit.>"
)

// Cluster operations: orch.v1.cluster.<op>.
const (
	OpClusterHealth  = "health"
	OpClusterNodes   = "nodes"
	OpRollPlan       = "roll.plan"
	OpRollStart      = "roll.start"
	OpRollStatus     = "roll.status"
	OpRollPause      = "roll.pause"
	OpRollResume     = "roll.resume"
	OpRollAbort      = "roll.abort"
	OpClusterHistory = "history"
	OpClusterReport  = "report"
	OpBreakerReset   = "breaker.reset"
)

// ClusterSubject is the subject of a cluster operation.
func ClusterSubject(op string) string { return Prefix + ".cluster." + op }

// ClusterNodeSubject is a cluster operation on one node (release,
// quarantine, forget).
func ClusterNodeSubject(nodeID, op string) string {
	return fmt.Sprintf("%s.cluster.node.%s.%s", Prefix, nodeID, op)
}

// CoordinatorSubject reaches one coordinator instance (followers forward
// actions to the leader there).
func CoordinatorSubject(coordID, op string) string {
	return fmt.Sprintf("%s.coord.%s.%s", Prefix, coordID, op)
}

// LeaseKeyNode is the ORCH_LEASES key that a node's supervisor holds.
func LeaseKeyNode(nodeID string) string { return "node." + nodeID }

package schema

// Message types: the "type" field of every reply and published message.
const (
	typePrefix = "io.restartcoord.v1."

	TypeError             = typePrefix + "error"
	TypeRestartResult     = typePrefix + "restart_result"
	TypeHealth            = typePrefix + "health"
	TypeShutdownReadiness = typePrefix + "shutdown_readiness"
	TypeRestartStatus     = typePrefix + "restart_status"
	TypeReconnectTest     = typePrefix + "reconnect_test"
	TypeTaskReply         = typePrefix + "task_reply"
	TypeHeartbeat         = typePrefix + "heartbeat"
	TypePhaseEvent        = typePrefix + "phase_event"
	TypeJobStep           = typePrefix + "job_step"
	TypeAlert             = typePrefix + "alert"
	TypeAudit             = typePrefix + "audit"
	TypeNotice            = typePrefix + "notice"
	TypeSnapshotInfo      = typePrefix + "snapshot_info"
	TypeBackupList        = typePrefix + "backup_list"
	TypeStateRestore      = typePrefix + "state_restore"
	TypeNodeInfo          = typePrefix + "node_info"
	TypePong              = typePrefix + "pong"
	TypeClientList        = typePrefix + "client_list"
)

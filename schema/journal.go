package schema

import (
	"encoding/json"
	"time"
)

// JournalVersion is the format version of journal entries.
const JournalVersion = 1

// JournalEntry is one durable effect in a node's journal (stream
// ORCH_JOURNAL, subject orch.v1.journal.<node_id>). A client request's effect
// and the reply sent for it are one entry, so a retry finds both or neither.
type JournalEntry struct {
	V         int             `json:"v"`
	At        time.Time       `json:"at"`
	RequestID string          `json:"request_id,omitempty"`
	ClientID  string          `json:"client_id,omitempty"`
	Op        string          `json:"op"`
	Task      *Task           `json:"task,omitempty"`
	Session   *Session        `json:"session,omitempty"`
	Reply     json.RawMessage `json:"reply,omitempty"`
	// ExpiredSession names a session the cleanup removed.
	ExpiredSession string `json:"expired_session,omitempty"`
}

// Journal ops besides the task ops: effects the node makes on its own.
const (
	JournalJobStep       = "job.step"
	JournalJobSuspend    = "job.suspend"
	JournalJobResume     = "job.resume"
	JournalSession       = "session"
	JournalSessionExpire = "session.expire"
)

// ClientsRequest is the body of orch.v1.node.<id>.clients.
type ClientsRequest struct{}

// Validate implements Validator.
func (*ClientsRequest) Validate() error { return nil }

// ClientInfo is one session as orch.v1.node.<id>.clients lists it.
type ClientInfo struct {
	Session
	Buffered int `json:"buffered"`
}

// ClientList is the reply of orch.v1.node.<id>.clients.
type ClientList struct {
	Type          string       `json:"type"`
	NodeID        string       `json:"node_id"`
	BufferLimit   int          `json:"buffer_limit"`
	TotalBuffered int          `json:"total_buffered"`
	Clients       []ClientInfo `json:"clients"`
	MeasuredAt    *time.Time   `json:"measured_at,omitempty"`
}

// BackupRequest is the body of orch.v1.node.<id>.state.backup.
type BackupRequest struct{}

// Validate implements Validator.
func (*BackupRequest) Validate() error { return nil }

// BackupsRequest is the body of orch.v1.node.<id>.state.backups.
type BackupsRequest struct{}

// Validate implements Validator.
func (*BackupsRequest) Validate() error { return nil }

// SnapshotInfo describes a stored snapshot.
type SnapshotInfo struct {
	Type          string    `json:"type,omitempty"`
	Index         int       `json:"index"` // 1 = newest
	SnapshotID    string    `json:"snapshot_id"`
	NodeID        string    `json:"node_id"`
	TakenAt       time.Time `json:"taken_at"`
	Trigger       string    `json:"trigger"`
	SchemaVersion int       `json:"schema_version"`
	JournalSeq    uint64    `json:"journal_seq"`
	SizeBytes     int64     `json:"size_bytes"`
	StoredBytes   int64     `json:"stored_bytes"` // compressed, as kept in the object store
	Tasks         int       `json:"tasks"`
	Sessions      int       `json:"sessions"`
	Checksum      string    `json:"checksum"`
}

// BackupList is the reply of state.backups.
type BackupList struct {
	Type    string         `json:"type"`
	NodeID  string         `json:"node_id"`
	Backups []SnapshotInfo `json:"backups"`
}

// RestoreRequest is the body of orch.v1.node.<id>.state.restore.
type RestoreRequest struct {
	// Backup is the index of state.backups (1 = newest) or a snapshot id.
	Backup  string  `json:"backup"`
	Confirm bool    `json:"confirm"`
	Timeout float64 `json:"timeout"`
}

// DefaultRestoreRequest is what {} means (it still needs backup and confirm).
func DefaultRestoreRequest() RestoreRequest { return RestoreRequest{Timeout: DefaultRestartTimeout} }

// Validate implements Validator.
func (r *RestoreRequest) Validate() error {
	if r.Backup == "" || len(r.Backup) > 128 {
		return Invalid("backup", "backup must name a backup: its index in state.backups (1 = newest) or its snapshot id")
	}
	if !r.Confirm {
		return Invalid("confirm", "restoring discards every write since the backup; send confirm:true (the CLI's --yes)")
	}
	if r.Timeout < MinRestartTimeout || r.Timeout > MaxRestartTimeout {
		return Invalid("timeout", "timeout must be %d..%d seconds, got %v", MinRestartTimeout, MaxRestartTimeout, r.Timeout)
	}
	return nil
}

// StateRestore is the reply of state.restore.
type StateRestore struct {
	Type       string        `json:"type"`
	NodeID     string        `json:"node_id"`
	RestoredTo SnapshotInfo  `json:"restored_to"`
	ArchivedAs SnapshotInfo  `json:"archived_as"`
	Discarded  DiscardReport `json:"discarded"`
	Restart    RestartResult `json:"restart"`
}

// DiscardReport says which writes a restore threw away.
type DiscardReport struct {
	TasksCreated  []string `json:"tasks_created"`
	TasksChanged  []string `json:"tasks_changed"`
	TasksRemoved  []string `json:"tasks_removed"`
	JournalWrites int      `json:"journal_writes"`
}

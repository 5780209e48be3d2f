package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"time"
)

// CurrentSchemaVersion is the state schema this binary writes by default and
// every older one is migrated to on load.
const CurrentSchemaVersion = 2

// MinSchemaVersion is the oldest state schema this binary can read.
const MinSchemaVersion = 1

// State is a node's whole preserved state, in the current schema.
type State struct {
	Tasks         []Task      `json:"tasks"`
	Sessions      []Session   `json:"sessions"`
	Replies       []KeptReply `json:"replies"`
	ConfigVersion string      `json:"config_version"`
}

// Canonical sorts the state's lists so that equal states encode to equal bytes.
func (s *State) Canonical() {
	slices.SortFunc(s.Tasks, func(a, b Task) int { return strings.Compare(a.TaskID, b.TaskID) })
	slices.SortFunc(s.Sessions, func(a, b Session) int { return strings.Compare(a.SessionID, b.SessionID) })
	slices.SortFunc(s.Replies, func(a, b KeptReply) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.RequestID, b.RequestID)
	})
}

// Snapshot is a checksummed, versioned copy of a node's state at a point of
// its journal: restore = snapshot + journal entries after JournalSeq.
type Snapshot struct {
	SchemaVersion int       `json:"schema_version"`
	NodeID        string    `json:"node_id"`
	SnapshotID    string    `json:"snapshot_id"`
	TakenAt       time.Time `json:"taken_at"`
	// JournalSeq is the stream sequence of the last journal entry the
	// state includes (0: none).
	JournalSeq uint64 `json:"journal_seq"`
	// Trigger says why it was taken: restart, periodic, manual, archive, migration, restore.
	Trigger  string `json:"trigger"`
	Checksum string `json:"checksum"`
	// Payload is the state in SchemaVersion's format, compact JSON.
	Payload json.RawMessage `json:"payload"`
}

// ComputeChecksum is the SHA-256 over the snapshot's identifying header and
// its whole payload, as "sha256:<hex>".
func (s *Snapshot) ComputeChecksum() string {
	h := sha256.New()
	s.writeHeader(h)
	h.Write(s.Payload)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func (s *Snapshot) writeHeader(h hash.Hash) {
	io.WriteString(h, fmt.Sprintf("restartcoord-snapshot\nschema_version=%d\nnode_id=%s\nsnapshot_id=%s\ntaken_at=%s\njournal_seq=%d\ntrigger=%s\n",
		s.SchemaVersion, s.NodeID, s.SnapshotID, s.TakenAt.UTC().Format(time.RFC3339Nano), s.JournalSeq, s.Trigger))
}

// Verify checks the checksum and that the schema version is one this binary
// reads. It returns a STATE_CORRUPTION *Error otherwise.
func (s *Snapshot) Verify() error {
	if got := s.ComputeChecksum(); got != s.Checksum {
		return Errorf(CodeStateCorruption, "snapshot %s of %s: checksum mismatch: recorded %s, computed %s",
			s.SnapshotID, s.NodeID, s.Checksum, got)
	}
	if s.SchemaVersion < MinSchemaVersion || s.SchemaVersion > CurrentSchemaVersion {
		return Errorf(CodeStateCorruption, "snapshot %s of %s has schema version %d; this binary reads %d..%d",
			s.SnapshotID, s.NodeID, s.SchemaVersion, MinSchemaVersion, CurrentSchemaVersion)
	}
	return nil
}

// NewSnapshot encodes st in schema version and seals it with its checksum.
func NewSnapshot(nodeID, snapshotID, trigger string, takenAt time.Time, journalSeq uint64, st *State, version int) (*Snapshot, error) {
	payload, err := EncodeState(st, version)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{SchemaVersion: version, NodeID: nodeID, SnapshotID: snapshotID, TakenAt: takenAt.UTC(),
		JournalSeq: journalSeq, Trigger: trigger, Payload: payload}
	s.Checksum = s.ComputeChecksum()
	return s, nil
}

// Marshal encodes the snapshot for storage.
func (s *Snapshot) Marshal() ([]byte, error) { return json.Marshal(s) }

// UnmarshalSnapshot decodes a stored snapshot and verifies it.
func UnmarshalSnapshot(data []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, Errorf(CodeStateCorruption, "snapshot is not readable: %v", err)
	}
	if err := s.Verify(); err != nil {
		return nil, err
	}
	return &s, nil
}

// State decodes the payload, migrating it to the current schema. from is the
// version it was stored in.
func (s *Snapshot) State() (st *State, from int, err error) {
	payload, err := Migrate(s.Payload, s.SchemaVersion, CurrentSchemaVersion)
	if err != nil {
		return nil, s.SchemaVersion, err
	}
	st = &State{}
	if err := json.Unmarshal(payload, st); err != nil {
		return nil, s.SchemaVersion, Errorf(CodeStateCorruption, "snapshot %s payload: %v", s.SnapshotID, err)
	}
	return st, s.SchemaVersion, nil
}

// EncodeState encodes st (canonically ordered) in the given schema version.
func EncodeState(st *State, version int) (json.RawMessage, error) {
	st.Canonical()
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if version == CurrentSchemaVersion {
		return payload, nil
	}
	return Migrate(payload, CurrentSchemaVersion, version)
}

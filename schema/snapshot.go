package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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
//
// Stored form (Marshal): one line of header JSON, then the payload bytes as
// they are, so that reading a snapshot never re-scans the payload as a JSON
// string or raw value:
//
//	{"format":"restartcoord-snapshot-framed-1","schema_version":2,...,"checksum":"sha256:...","tasks_index":[10,...]}\n
//	{"tasks":[...],"sessions":[...],"replies":[...],"config_version":"..."}
//
// Both lines are JSON (jq reads the pair as two values). UnmarshalSnapshot
// also reads the earlier form, one JSON object with the payload inside.
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
	// Canonical says the payload is exactly json.Marshal of its state
	// (NewSnapshot writes it so at the current schema version): each task's
	// bytes in it are the task's JSON, which StateAndReplies reuses. It is
	// covered by the checksum.
	Canonical bool `json:"-"`
	// TasksIndex holds byte offsets into Payload: where each chunk of the
	// task list begins, then where the list ends (its ']'). State() uses it
	// to decode the chunks in parallel. It is a hint, outside the checksum:
	// offsets that are not exactly chunk boundaries make the chunks
	// unreadable, and State() falls back to reading the payload in one go,
	// so no index can change what State() returns.
	TasksIndex []int `json:"-"`
}

// snapshotFormat names the framed stored form (Marshal).
const snapshotFormat = "restartcoord-snapshot-framed-1"

// framedPrefix starts every framed snapshot; the earlier form starts
// with `{"schema_version":`.
var framedPrefix = []byte(`{"format":`)

// snapshotHeader is the first line of the framed form.
type snapshotHeader struct {
	Format        string    `json:"format"`
	SchemaVersion int       `json:"schema_version"`
	NodeID        string    `json:"node_id"`
	SnapshotID    string    `json:"snapshot_id"`
	TakenAt       time.Time `json:"taken_at"`
	JournalSeq    uint64    `json:"journal_seq"`
	Trigger       string    `json:"trigger"`
	Checksum      string    `json:"checksum"`
	Canonical     bool      `json:"canonical,omitempty"`
	TasksIndex    []int     `json:"tasks_index,omitempty"`
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
	if s.Canonical {
		io.WriteString(h, "payload=canonical\n")
	}
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
	s := &Snapshot{SchemaVersion: version, NodeID: nodeID, SnapshotID: snapshotID, TakenAt: takenAt.UTC(),
		JournalSeq: journalSeq, Trigger: trigger}
	var err error
	if version != CurrentSchemaVersion {
		if s.Payload, _, err = encodeState(st, version); err != nil {
			return nil, err
		}
		s.Checksum = s.ComputeChecksum()
		return s, nil
	}
	// The checksum is computed while the payload is encoded (the same
	// bytes as ComputeChecksum hashes, header first). encodeCurrent's
	// payload is json.Marshal's, whichever way it was made.
	s.Canonical = true
	h := sha256.New()
	s.writeHeader(h)
	st.Canonical()
	payload, index, hashed, err := encodeCurrent(st, h)
	if err != nil {
		return nil, err
	}
	s.Payload, s.TasksIndex = payload, index
	if hashed {
		s.Checksum = "sha256:" + hex.EncodeToString(h.Sum(nil))
	} else {
		s.Checksum = s.ComputeChecksum()
	}
	return s, nil
}

// Marshal encodes the snapshot for storage, in the framed form: the header
// line (MarshalHeader), then the payload as it is.
func (s *Snapshot) Marshal() ([]byte, error) {
	head, err := s.MarshalHeader()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(head)+len(s.Payload))
	return append(append(out, head...), s.Payload...), nil
}

// MarshalHeader returns the first part of Marshal: the header line and its
// newline. Marshal is MarshalHeader followed by Payload, so a writer can
// store the two without joining them first.
func (s *Snapshot) MarshalHeader() ([]byte, error) {
	if len(s.Payload) == 0 {
		return nil, fmt.Errorf("snapshot %s has no payload", s.SnapshotID)
	}
	head, err := json.Marshal(snapshotHeader{Format: snapshotFormat, SchemaVersion: s.SchemaVersion, NodeID: s.NodeID,
		SnapshotID: s.SnapshotID, TakenAt: s.TakenAt, JournalSeq: s.JournalSeq, Trigger: s.Trigger,
		Checksum: s.Checksum, Canonical: s.Canonical, TasksIndex: s.TasksIndex})
	if err != nil {
		return nil, err
	}
	return append(head, '\n'), nil
}

// UnmarshalSnapshot decodes a stored snapshot (framed, or the earlier single
// JSON object) and verifies it. A framed snapshot's Payload is a slice of
// data, not a copy.
func UnmarshalSnapshot(data []byte) (*Snapshot, error) {
	var s Snapshot
	if bytes.HasPrefix(data, framedPrefix) {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return nil, Errorf(CodeStateCorruption, "snapshot is not readable: header line has no end")
		}
		var h snapshotHeader
		if err := json.Unmarshal(data[:nl], &h); err != nil {
			return nil, Errorf(CodeStateCorruption, "snapshot header is not readable: %v", err)
		}
		if h.Format != snapshotFormat {
			return nil, Errorf(CodeStateCorruption, "snapshot has format %q; this binary reads %q", h.Format, snapshotFormat)
		}
		s = Snapshot{SchemaVersion: h.SchemaVersion, NodeID: h.NodeID, SnapshotID: h.SnapshotID, TakenAt: h.TakenAt,
			JournalSeq: h.JournalSeq, Trigger: h.Trigger, Checksum: h.Checksum, Canonical: h.Canonical,
			Payload: data[nl+1:], TasksIndex: h.TasksIndex}
	} else if err := json.Unmarshal(data, &s); err != nil {
		return nil, Errorf(CodeStateCorruption, "snapshot is not readable: %v", err)
	}
	if err := s.Verify(); err != nil {
		return nil, err
	}
	return &s, nil
}

// State decodes the payload, migrating it to the current schema. from is the
// version it was stored in. It returns exactly what json.Unmarshal of the
// (migrated) payload into a State gives: payloads in the form this package
// writes take a faster, parallel path; anything else is read by
// encoding/json.
func (s *Snapshot) State() (st *State, from int, err error) {
	payload, index := s.Payload, s.TasksIndex
	if s.SchemaVersion != CurrentSchemaVersion {
		if payload, err = Migrate(s.Payload, s.SchemaVersion, CurrentSchemaVersion); err != nil {
			return nil, s.SchemaVersion, err
		}
		index = nil
	}
	if st, _, ok := decodeCanonical(payload, index, false); ok {
		return st, s.SchemaVersion, nil
	}
	st = &State{}
	if err := json.Unmarshal(payload, st); err != nil {
		return nil, s.SchemaVersion, Errorf(CodeStateCorruption, "snapshot %s payload: %v", s.SnapshotID, err)
	}
	return st, s.SchemaVersion, nil
}

// StateAndReplies is State, plus the kept replies that refer to their task
// rebuilt as RefReplyBodies does. For a Canonical snapshot they are made of
// the payload's own bytes of each task (which are json.Marshal's), instead
// of encoding every task again.
func (s *Snapshot) StateAndReplies() (st *State, bodies [][]byte, from int, err error) {
	if s.Canonical && s.SchemaVersion == CurrentSchemaVersion {
		if st, spans, ok := decodeCanonical(s.Payload, s.TasksIndex, true); ok {
			return st, refReplyBodiesFrom(st, s.Payload, spans), s.SchemaVersion, nil
		}
	}
	if st, from, err = s.State(); err != nil {
		return nil, nil, from, err
	}
	return st, st.RefReplyBodies(), from, nil
}

// EncodeState encodes st (canonically ordered) in the given schema version.
func EncodeState(st *State, version int) (json.RawMessage, error) {
	payload, _, err := encodeState(st, version)
	return payload, err
}

func encodeState(st *State, version int) (json.RawMessage, []int, error) {
	st.Canonical()
	payload, index, _, err := encodeCurrent(st, nil)
	if err != nil {
		return nil, nil, err
	}
	if version == CurrentSchemaVersion {
		return payload, index, nil
	}
	payload, err = Migrate(payload, CurrentSchemaVersion, version)
	return payload, nil, err
}

// --- encoding ----------------------------------------------------------------

// chunkTasks is how many tasks one chunk of the task list holds, when
// encoding in parallel and in TasksIndex; lists shorter than two chunks are
// encoded in one go and carry no index.
const chunkTasks = 256

// tasksPrefix is how a State's JSON begins when it has a task list.
const tasksPrefix = `{"tasks":[`

// encodeCurrent returns json.Marshal(st), byte for byte, and the offsets of
// its task chunks (nil for fewer than two). The lists are encoded in chunks
// on every core: a JSON array's elements are encoded independently of each
// other, so the chunks joined with commas are the bytes of the whole list.
// When h is not nil, the payload is also written to h while the chunks are
// encoded, in order, and hashed reports it (false: h holds garbage).
func encodeCurrent(st *State, h io.Writer) (payload []byte, index []int, hashed bool, err error) {
	if !canonicalTypes() {
		payload, err = json.Marshal(st)
		return payload, nil, false, err
	}
	const chunkReplies = 1024
	nt := (len(st.Tasks) + chunkTasks - 1) / chunkTasks
	nr := (len(st.Replies) + chunkReplies - 1) / chunkReplies
	parts := make([][]byte, nt+nr+1) // task chunks, reply chunks, sessions
	done := make([]chan struct{}, len(parts))
	for j := range done {
		done[j] = make(chan struct{})
	}

	// The payload in order: literal bytes (part < 0) and parts.
	type seg struct {
		lit  []byte
		part int
	}
	var segs []seg
	lit := func(b string) { segs = append(segs, seg{lit: []byte(b), part: -1}) }
	var taskSegs []int // the segments of the task chunks, then of the list's ']'
	list := func(isNil bool, from, to int, where *[]int) {
		if isNil {
			lit("null")
			return
		}
		lit("[")
		for j := from; j < to; j++ {
			if j > from {
				lit(",")
			}
			if where != nil {
				*where = append(*where, len(segs))
			}
			segs = append(segs, seg{part: j})
		}
		if where != nil {
			*where = append(*where, len(segs))
		}
		lit("]")
	}
	lit(`{"tasks":`)
	list(st.Tasks == nil, 0, nt, &taskSegs)
	lit(`,"sessions":`)
	list(st.Sessions == nil, nt+nr, nt+nr+1, nil)
	lit(`,"replies":`)
	list(st.Replies == nil, nt, nt+nr, nil)
	segs = append(segs, seg{lit: appendString([]byte(`,"config_version":`), st.ConfigVersion), part: -1})
	lit("}")

	var failed atomic.Bool
	hashDone := make(chan struct{})
	if h != nil {
		// SHA-256 is sequential: it follows the encoders chunk by chunk.
		go func() {
			defer close(hashDone)
			for _, sg := range segs {
				if sg.part < 0 {
					h.Write(sg.lit)
					continue
				}
				<-done[sg.part]
				if failed.Load() {
					return
				}
				h.Write(parts[sg.part])
			}
		}()
	} else {
		close(hashDone)
	}
	parallel(len(parts), func(j int) {
		defer close(done[j])
		var ok bool
		switch {
		case j < nt:
			parts[j], ok = appendElems(st.Tasks[j*chunkTasks:min((j+1)*chunkTasks, len(st.Tasks))], 1100, appendTask)
		case j < nt+nr:
			k := j - nt
			parts[j], ok = appendElems(st.Replies[k*chunkReplies:min((k+1)*chunkReplies, len(st.Replies))], 160, appendReply)
		default:
			parts[j], ok = appendElems(st.Sessions, 200, appendSession)
		}
		if !ok {
			failed.Store(true)
		}
	})
	<-hashDone
	if failed.Load() {
		// Something only encoding/json handles (or refuses): let it.
		payload, err = json.Marshal(st)
		return payload, nil, false, err
	}

	offsets := make([]int, len(segs)+1)
	for i, sg := range segs {
		n := len(sg.lit)
		if sg.part >= 0 {
			n = len(parts[sg.part])
		}
		offsets[i+1] = offsets[i] + n
	}
	payload = make([]byte, offsets[len(segs)])
	parallel(len(segs), func(i int) {
		if sg := segs[i]; sg.part >= 0 {
			copy(payload[offsets[i]:], parts[sg.part])
		} else {
			copy(payload[offsets[i]:], sg.lit)
		}
	})
	if nt >= 2 {
		index = make([]int, len(taskSegs))
		for i, sg := range taskSegs {
			index[i] = offsets[sg]
		}
	}
	return payload, index, h != nil, nil
}

// appendElems encodes xs, comma-separated (no brackets), with app.
func appendElems[T any](xs []T, sizeHint int, app func([]byte, *T) ([]byte, bool)) ([]byte, bool) {
	b := make([]byte, 0, sizeHint*len(xs))
	for i := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = app(b, &xs[i]); !ok {
			return nil, false
		}
	}
	return b, true
}

// appendTask appends json.Marshal(t), byte for byte, or reports false for
// a task it leaves to encoding/json (a time outside years 0..9999, a
// non-finite number, a raw value that is not JSON: the cases where
// json.Marshal fails). Strings of printable ASCII without " \ < > & (what
// encoding/json copies as they are) are copied; any other string,
// and raw values, are encoded by encoding/json itself.
func appendTask(b []byte, t *Task) ([]byte, bool) {
	ok := true
	b = append(b, `{"task_id":`...)
	b = appendString(b, t.TaskID)
	b = append(b, `,"title":`...)
	b = appendString(b, t.Title)
	if t.Description != "" {
		b = append(b, `,"description":`...)
		b = appendString(b, t.Description)
	}
	b = append(b, `,"status":`...)
	b = appendString(b, string(t.Status))
	b = append(b, `,"progress":`...)
	b = appendFloat(b, t.Progress, &ok)
	if len(t.Checkpoint) > 0 {
		b = append(b, `,"checkpoint":`...)
		b = appendRaw(b, t.Checkpoint, &ok)
	}
	if len(t.Result) > 0 {
		b = append(b, `,"result":`...)
		b = appendRaw(b, t.Result, &ok)
	}
	if t.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, t.Error)
	}
	if t.Job != nil {
		b = append(b, `,"job":{"kind":`...)
		b = appendString(b, t.Job.Kind)
		b = append(b, `,"steps":`...)
		b = strconv.AppendInt(b, int64(t.Job.Steps), 10)
		b = append(b, `,"step_seconds":`...)
		b = appendFloat(b, t.Job.StepSeconds, &ok)
		b = append(b, '}')
	}
	if t.StepsDone != 0 {
		b = append(b, `,"steps_done":`...)
		b = strconv.AppendInt(b, int64(t.StepsDone), 10)
	}
	b = append(b, `,"created_at":`...)
	b = appendTime(b, t.CreatedAt, &ok)
	b = append(b, `,"updated_at":`...)
	b = appendTime(b, t.UpdatedAt, &ok)
	return append(b, '}'), ok
}

// appendSession appends json.Marshal(x), or reports false (see appendTask).
func appendSession(b []byte, x *Session) ([]byte, bool) {
	ok := true
	b = append(b, `{"session_id":`...)
	b = appendString(b, x.SessionID)
	b = append(b, `,"client_id":`...)
	b = appendString(b, x.ClientID)
	if x.ClientKind != "" {
		b = append(b, `,"client_kind":`...)
		b = appendString(b, x.ClientKind)
	}
	b = append(b, `,"connected_at":`...)
	b = appendTime(b, x.ConnectedAt, &ok)
	b = append(b, `,"last_activity":`...)
	b = appendTime(b, x.LastActivity, &ok)
	b = append(b, `,"requests":`...)
	b = strconv.AppendInt(b, x.Requests, 10)
	b = append(b, `,"reconnects":`...)
	b = strconv.AppendInt(b, int64(x.Reconnects), 10)
	b = append(b, `,"reconnect_seconds":`...)
	b = appendFloat(b, x.ReconnectSeconds, &ok)
	return append(b, '}'), ok
}

// appendReply appends json.Marshal(r), or reports false (see appendTask).
func appendReply(b []byte, r *KeptReply) ([]byte, bool) {
	ok := true
	b = append(b, `{"request_id":`...)
	b = appendString(b, r.RequestID)
	b = append(b, `,"client_id":`...)
	b = appendString(b, r.ClientID)
	if len(r.Reply) > 0 {
		b = append(b, `,"reply":`...)
		b = appendRaw(b, r.Reply, &ok)
	}
	if r.TaskRef != "" {
		b = append(b, `,"task_ref":`...)
		b = appendString(b, r.TaskRef)
	}
	b = append(b, `,"at":`...)
	b = appendTime(b, r.At, &ok)
	return append(b, '}'), ok
}

// asIs marks the bytes encoding/json copies into a string as they are
// (with HTML escaping, which json.Marshal does): printable ASCII but " \ < > &.
var asIs = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

func appendString(b []byte, s string) []byte {
	if !stringAsIs(s) {
		q, _ := json.Marshal(s) // a string always encodes
		return append(b, q...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// stringAsIs reports whether every byte of s is asIs, eight at a time.
func stringAsIs(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// A byte is 0 in v exactly when (v-ones)&^v has its high bit set;
		// below n (n <= 0x80) in x when (x-n*ones)&^x does.
		bad := x&highs | (x-0x20*ones)&^x // >= 0x80, < 0x20
		y := x ^ 0x7f*ones                // DEL
		bad |= (y - ones) &^ y
		y = (x | 0x04*ones) ^ 0x26*ones // " and &
		bad |= (y - ones) &^ y
		y = (x | 0x02*ones) ^ 0x3e*ones // < and >
		bad |= (y - ones) &^ y
		y = x ^ 0x5c*ones // backslash
		bad |= (y - ones) &^ y
		if bad&highs != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if !asIs[s[i]] {
			return false
		}
	}
	return true
}

// appendFloat is encoding/json's float64 encoder.
func appendFloat(b []byte, f float64, ok *bool) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		*ok = false
		return b
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendTime is time.Time.MarshalJSON (whose output encoding/json copies
// as it is).
func appendTime(b []byte, t time.Time, ok *bool) []byte {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		*ok = false
		return b
	}
	return append(b, '"')
}

// appendRaw is what encoding/json writes for a json.RawMessage: the value
// compacted, with < > & U+2028 U+2029 escaped, or an error if it is not
// JSON. A compact value without those is copied as it is.
func appendRaw(b []byte, raw json.RawMessage, ok *bool) []byte {
	if end, valid := skipValue(raw, 0, 0); valid && end == len(raw) && !hasHTMLOrLineSep(raw) {
		return append(b, raw...)
	}
	enc, err := json.Marshal(raw)
	if err != nil {
		*ok = false
		return b
	}
	return append(b, enc...)
}

// hasHTMLOrLineSep reports whether b holds a byte that encoding/json's
// compaction escapes: < > & or the first byte of U+2028 / U+2029.
func hasHTMLOrLineSep(b []byte) bool {
	for _, c := range b {
		if c == '<' || c == '>' || c == '&' || c == 0xe2 {
			return true
		}
	}
	return false
}

// refReplyBodiesFrom is RefReplyBodies for a state decoded from a
// canonical payload: a task's JSON is its bytes in the payload (spans[i]
// for st.Tasks[i]).
func refReplyBodiesFrom(st *State, payload []byte, spans []span) [][]byte {
	if len(spans) != len(st.Tasks) {
		return st.RefReplyBodies()
	}
	out := make([][]byte, len(st.Replies))
	tasks := make(map[string]int, len(st.Tasks))
	for i := range st.Tasks {
		tasks[st.Tasks[i].TaskID] = i
	}
	const per = 256
	parallel((len(st.Replies)+per-1)/per, func(j int) {
		var b []byte // the bodies of a chunk share one buffer, each capped at its end
		for i := j * per; i < min((j+1)*per, len(st.Replies)); i++ {
			r := &st.Replies[i]
			k, found := tasks[r.TaskRef]
			if r.TaskRef == "" || !found {
				continue
			}
			task := payload[spans[k].start:spans[k].end]
			if spans[k].escaped && bytes.Contains(task, []byte(`\ufffd`)) {
				// Maybe invalid UTF-8 that json.Marshal replaced: the
				// task decoded from it encodes differently (as U+FFFD
				// itself). Encode it, as TaskReplyBody would.
				out[i] = TaskReplyBody(r.RequestID, &st.Tasks[k], nil)
				continue
			}
			if b == nil {
				b = make([]byte, 0, per*(len(task)+200))
			}
			start := len(b)
			b = appendReplyHead(b, r.RequestID)
			b = append(append(b, task...), '}')
			out[i] = b[start:len(b):len(b)]
		}
	})
	return out
}

// appendReplyHead appends what TaskReplyBody writes before the result.
func appendReplyHead(b []byte, requestID string) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, TypeTaskReply)
	b = append(b, `,"ok":true`...)
	if requestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, requestID)
	}
	return append(b, `,"result":`...)
}

// RefReplyBodies returns, for each kept reply of st that refers to its task
// (TaskRef) when st holds that task, the bytes TaskReplyBody(request_id,
// task, nil) gives: the reply ExpandReplies would rebuild. The others are
// nil. The bodies are built on every core, without the second pass of
// encoding/json over each task that TaskReplyBody makes: json.Marshal's
// output is compact and escaped, so compacting it again as the reply's raw
// "result" changes nothing.
func (st *State) RefReplyBodies() [][]byte {
	out := make([][]byte, len(st.Replies))
	if len(st.Replies) == 0 {
		return out
	}
	tasks := make(map[string]*Task, len(st.Tasks))
	for i := range st.Tasks {
		tasks[st.Tasks[i].TaskID] = &st.Tasks[i]
	}
	fast := canonicalTypes()
	const per = 256
	parallel((len(st.Replies)+per-1)/per, func(j int) {
		// The bodies of a chunk share one buffer, each capped at its end.
		var b []byte
		for i := j * per; i < min((j+1)*per, len(st.Replies)); i++ {
			r := &st.Replies[i]
			t, found := tasks[r.TaskRef]
			if r.TaskRef == "" || !found {
				continue
			}
			if fast {
				if b == nil {
					b = make([]byte, 0, per*(len(t.Description)+len(t.Checkpoint)+len(t.Result)+400))
				}
				start := len(b)
				b = appendReplyHead(b, r.RequestID)
				var ok bool
				if b, ok = appendTask(b, t); ok {
					b = append(b, '}')
					out[i] = b[start:len(b):len(b)]
					continue
				}
				b = b[:start]
			}
			out[i] = TaskReplyBody(r.RequestID, t, nil)
		}
	})
	return out
}

// canonicalTypes reports whether the types the fast encoder and decoder of
// this file handle by hand are still the ones they were written for: the
// same fields, types and tags, in the same order, and no JSON or text
// (un)marshaling methods of their own. If one changes, both step aside and
// encoding/json does all the work, until they are updated.
var canonicalTypes = sync.OnceValue(func() bool {
	type f struct {
		name, tag string
		typ       reflect.Type
	}
	str, flt, tim, raw := reflect.TypeFor[string](), reflect.TypeFor[float64](), reflect.TypeFor[time.Time](), reflect.TypeFor[json.RawMessage]()
	want := map[reflect.Type][]f{
		reflect.TypeFor[State](): {{"Tasks", `json:"tasks"`, reflect.TypeFor[[]Task]()},
			{"Sessions", `json:"sessions"`, reflect.TypeFor[[]Session]()}, {"Replies", `json:"replies"`, reflect.TypeFor[[]KeptReply]()},
			{"ConfigVersion", `json:"config_version"`, str}},
		reflect.TypeFor[Task](): {{"TaskID", `json:"task_id"`, str}, {"Title", `json:"title"`, str},
			{"Description", `json:"description,omitempty"`, str}, {"Status", `json:"status"`, reflect.TypeFor[TaskStatus]()},
			{"Progress", `json:"progress"`, flt}, {"Checkpoint", `json:"checkpoint,omitempty"`, raw},
			{"Result", `json:"result,omitempty"`, raw}, {"Error", `json:"error,omitempty"`, str},
			{"Job", `json:"job,omitempty"`, reflect.TypeFor[*Job]()}, {"StepsDone", `json:"steps_done,omitempty"`, reflect.TypeFor[int]()},
			{"CreatedAt", `json:"created_at"`, tim}, {"UpdatedAt", `json:"updated_at"`, tim}},
		reflect.TypeFor[Job](): {{"Kind", `json:"kind"`, str}, {"Steps", `json:"steps"`, reflect.TypeFor[int]()},
			{"StepSeconds", `json:"step_seconds"`, flt}},
		reflect.TypeFor[Session](): {{"SessionID", `json:"session_id"`, str}, {"ClientID", `json:"client_id"`, str},
			{"ClientKind", `json:"client_kind,omitempty"`, str}, {"ConnectedAt", `json:"connected_at"`, tim},
			{"LastActivity", `json:"last_activity"`, tim}, {"Requests", `json:"requests"`, reflect.TypeFor[int64]()},
			{"Reconnects", `json:"reconnects"`, reflect.TypeFor[int]()}, {"ReconnectSeconds", `json:"reconnect_seconds"`, flt}},
		reflect.TypeFor[KeptReply](): {{"RequestID", `json:"request_id"`, str}, {"ClientID", `json:"client_id"`, str},
			{"Reply", `json:"reply,omitempty"`, raw}, {"TaskRef", `json:"task_ref,omitempty"`, str}, {"At", `json:"at"`, tim}},
		reflect.TypeFor[TaskReply](): {{"Type", `json:"type"`, str}, {"OK", `json:"ok"`, reflect.TypeFor[bool]()},
			{"RequestID", `json:"request_id,omitempty"`, str}, {"Result", `json:"result,omitempty"`, raw},
			{"Error", `json:"error,omitempty"`, reflect.TypeFor[*Error]()}},
	}
	if strconv.IntSize != 64 {
		return false
	}
	own := []reflect.Type{reflect.TypeFor[json.Marshaler](), reflect.TypeFor[json.Unmarshaler](),
		reflect.TypeFor[encoding.TextMarshaler](), reflect.TypeFor[encoding.TextUnmarshaler]()}
	for t, fields := range want {
		if t.NumField() != len(fields) {
			return false
		}
		for i, w := range fields {
			got := t.Field(i)
			if got.Name != w.name || string(got.Tag) != w.tag || got.Type != w.typ {
				return false
			}
		}
		for _, typ := range []reflect.Type{t, reflect.TypeFor[TaskStatus]()} {
			for _, m := range own {
				if typ.Implements(m) || reflect.PointerTo(typ).Implements(m) {
					return false
				}
			}
		}
	}
	return true
})

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for j := range n {
			fn(j)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= n {
					return
				}
				fn(j)
			}
		})
	}
	wg.Wait()
}

// --- decoding ----------------------------------------------------------------
//
// decodeCanonical reads a current-schema payload in exactly the form
// json.Marshal writes it (keys in field order, no whitespace, optional keys
// only where omitempty allows them), much faster than encoding/json: strings
// without escapes are copied at memory speed, times go through
// time.Time.UnmarshalJSON, numbers through strconv as encoding/json does,
// raw values are validated and copied. Whatever it does not expect (another
// key order, whitespace, an unknown or repeated key, null where a value was
// expected, a number out of range, invalid UTF-8, ...) makes it give up
// (ok false) and the caller uses encoding/json. It never accepts a payload
// that encoding/json would refuse, and what it accepts it decodes to what
// encoding/json would.

// decodeCanonical decodes payload; index (TasksIndex) lets it decode the
// task chunks, and the rest of the state, in parallel. With withSpans it
// also returns where each task's JSON is in payload.
func decodeCanonical(payload []byte, index []int, withSpans bool) (*State, []span, bool) {
	if !canonicalTypes() {
		return nil, nil, false
	}
	if st, spans, ok := decodeIndexed(payload, index, withSpans); ok {
		return st, spans, true
	}
	st := &State{}
	d := newDec(payload, 0)
	d.expect(`{"tasks":`)
	var spans []span
	if d.accept("null") {
		if !decodeRest(st, payload, -1) {
			return nil, nil, false
		}
		return st, nil, true
	}
	d.expect("[")
	st.Tasks = []Task{}
	for !d.bad && !d.accept("]") {
		if len(st.Tasks) > 0 {
			d.expect(",")
		}
		var t Task
		start := d.i
		d.escaped = false
		d.task(&t)
		st.Tasks = append(st.Tasks, t)
		if withSpans {
			spans = append(spans, span{start, d.i, d.escaped})
		}
	}
	if d.bad || !decodeRest(st, payload, d.i-1) {
		return nil, nil, false
	}
	return st, spans, true
}

// span is where a task's JSON is in a payload; escaped: one of its
// strings had escapes.
type span struct {
	start, end int
	escaped    bool
}

// decodeRest decodes what follows the task list, whose ']' is at rest (-1:
// the list was null).
func decodeRest(st *State, payload []byte, rest int) bool {
	var d *dec
	if rest >= 0 {
		d = newDec(payload, rest)
		d.expect("]")
	} else {
		d = newDec(payload, len(`{"tasks":null`))
	}
	d.expect(`,"sessions":`)
	st.Sessions = decodeList(d, (*dec).session)
	d.expect(`,"replies":`)
	st.Replies = decodeList(d, (*dec).reply)
	d.expect(`,"config_version":`)
	st.ConfigVersion = d.str()
	d.expect("}")
	return !d.bad && d.i == len(d.b)
}

// decodeIndexed decodes the chunks of the task list along index, and the
// rest of the state, in parallel.
func decodeIndexed(b []byte, index []int, withSpans bool) (*State, []span, bool) {
	m := len(index) - 1 // chunks
	if m < 1 || index[0] != len(tasksPrefix) || !bytes.HasPrefix(b, []byte(tasksPrefix)) {
		return nil, nil, false
	}
	for i := 1; i <= m; i++ {
		if index[i] <= index[i-1] || index[i] >= len(b) {
			return nil, nil, false
		}
		if i < m && b[index[i]-1] != ',' {
			return nil, nil, false
		}
	}
	if b[index[m]] != ']' {
		return nil, nil, false
	}
	st := &State{}
	out := make([][]Task, m)
	outSpans := make([][]span, m)
	var failed atomic.Bool
	// Job 0, the longest (sessions and replies), first.
	parallel(m+1, func(j int) {
		if failed.Load() {
			return
		}
		if j == 0 {
			if !decodeRest(st, b, index[m]) {
				failed.Store(true)
			}
			return
		}
		j--
		end := index[j+1]
		if j < m-1 {
			end-- // the comma
		}
		d := newDec(b[:end], index[j])
		var tasks []Task
		var spans []span
		for {
			var t Task
			start := d.i
			d.escaped = false
			d.task(&t)
			if d.bad {
				failed.Store(true)
				return
			}
			tasks = append(tasks, t)
			if withSpans {
				spans = append(spans, span{start, d.i, d.escaped})
			}
			if d.i == len(d.b) {
				break
			}
			d.expect(",")
		}
		out[j], outSpans[j] = tasks, spans
	})
	if failed.Load() {
		return nil, nil, false
	}
	n := 0
	for _, c := range out {
		n += len(c)
	}
	st.Tasks = make([]Task, 0, n)
	var spans []span
	if withSpans {
		spans = make([]span, 0, n)
	}
	for j, c := range out {
		st.Tasks = append(st.Tasks, c...)
		spans = append(spans, outSpans[j]...)
	}
	return st, spans, true
}

// dec is a cursor over canonical JSON. After the first mismatch bad is set
// and every method returns zero values.
type dec struct {
	b   []byte
	i   int
	bad bool
	// text is string(b[base:]), made once: strings without escapes are
	// cut from it instead of being allocated one by one (they share its
	// memory, as the decoded state keeps nearly all of it anyway).
	text string
	base int
	// escaped: a string with escapes was read.
	escaped bool
}

// newDec reads b from i; the strings it returns share one copy of b[i:].
func newDec(b []byte, i int) *dec {
	d := &dec{b: b, i: i, base: i}
	if i <= len(b) {
		d.text = string(b[i:])
	}
	return d
}

// accept consumes s if the input continues with it.
func (d *dec) accept(s string) bool {
	if d.bad || len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

// expect consumes s or marks the input bad.
func (d *dec) expect(s string) {
	if !d.accept(s) {
		d.bad = true
	}
}

// decodeList reads null (nil), [] (empty, not nil) or [v,...].
func decodeList[T any](d *dec, elem func(*dec, *T)) []T {
	if d.accept("null") {
		return nil
	}
	d.expect("[")
	out := []T{}
	if d.accept("]") {
		return out
	}
	for !d.bad {
		var v T
		elem(d, &v)
		out = append(out, v)
		if d.accept("]") {
			return out
		}
		d.expect(",")
	}
	return nil
}

func (d *dec) task(t *Task) {
	d.expect(`{"task_id":`)
	t.TaskID = d.str()
	d.expect(`,"title":`)
	t.Title = d.str()
	if d.accept(`,"description":`) {
		t.Description = d.str()
	}
	d.expect(`,"status":`)
	t.Status = TaskStatus(d.str())
	d.expect(`,"progress":`)
	t.Progress = d.float()
	if d.accept(`,"checkpoint":`) {
		t.Checkpoint = d.raw()
	}
	if d.accept(`,"result":`) {
		t.Result = d.raw()
	}
	if d.accept(`,"error":`) {
		t.Error = d.str()
	}
	if d.accept(`,"job":`) {
		j := &Job{}
		d.expect(`{"kind":`)
		j.Kind = d.str()
		d.expect(`,"steps":`)
		j.Steps = int(d.int())
		d.expect(`,"step_seconds":`)
		j.StepSeconds = d.float()
		d.expect("}")
		t.Job = j
	}
	if d.accept(`,"steps_done":`) {
		t.StepsDone = int(d.int())
	}
	d.expect(`,"created_at":`)
	t.CreatedAt = d.time()
	d.expect(`,"updated_at":`)
	t.UpdatedAt = d.time()
	d.expect("}")
}

func (d *dec) session(s *Session) {
	d.expect(`{"session_id":`)
	s.SessionID = d.str()
	d.expect(`,"client_id":`)
	s.ClientID = d.str()
	if d.accept(`,"client_kind":`) {
		s.ClientKind = d.str()
	}
	d.expect(`,"connected_at":`)
	s.ConnectedAt = d.time()
	d.expect(`,"last_activity":`)
	s.LastActivity = d.time()
	d.expect(`,"requests":`)
	s.Requests = d.int()
	d.expect(`,"reconnects":`)
	s.Reconnects = int(d.int())
	d.expect(`,"reconnect_seconds":`)
	s.ReconnectSeconds = d.float()
	d.expect("}")
}

func (d *dec) reply(r *KeptReply) {
	d.expect(`{"request_id":`)
	r.RequestID = d.str()
	d.expect(`,"client_id":`)
	r.ClientID = d.str()
	if d.accept(`,"reply":`) {
		r.Reply = d.raw()
	}
	if d.accept(`,"task_ref":`) {
		r.TaskRef = d.str()
	}
	d.expect(`,"at":`)
	r.At = d.time()
	d.expect("}")
}

// str reads a JSON string: one without escapes, control characters or
// invalid UTF-8 is its bytes; one with escapes is unquoted by
// encoding/json.
func (d *dec) str() string {
	if d.bad || d.i >= len(d.b) || d.b[d.i] != '"' {
		d.bad = true
		return ""
	}
	start := d.i + 1
	n := bytes.IndexByte(d.b[start:], '"')
	if n < 0 {
		d.bad = true
		return ""
	}
	span := d.b[start : start+n]
	if bytes.IndexByte(span, '\\') < 0 {
		if !plainString(span) {
			d.bad = true
			return ""
		}
		d.i = start + n + 1
		if start >= d.base && len(d.text) >= start+n-d.base {
			return d.text[start-d.base : start+n-d.base]
		}
		return string(span)
	}
	d.escaped = true
	end, ok := skipString(d.b, d.i)
	var s string
	if !ok || json.Unmarshal(d.b[d.i:end], &s) != nil {
		d.bad = true
		return ""
	}
	d.i = end
	return s
}

// plainString reports whether b (a string's content, without quotes and
// backslashes) is what encoding/json takes as it is: no control characters,
// valid UTF-8.
func plainString(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if x&0x8080808080808080 != 0 {
			break // not ASCII: checked byte by byte below
		}
		if (x-0x2020202020202020)&^x&0x8080808080808080 != 0 {
			return false // a byte below 0x20
		}
	}
	rest := b[i:]
	for _, c := range rest {
		if c < 0x20 {
			return false
		}
	}
	return utf8.Valid(rest)
}

// time reads a quoted time as encoding/json does: time.Time.UnmarshalJSON.
func (d *dec) time() time.Time {
	var t time.Time
	if d.bad || d.i >= len(d.b) || d.b[d.i] != '"' {
		d.bad = true
		return t
	}
	n := bytes.IndexByte(d.b[d.i+1:], '"')
	if n < 0 {
		d.bad = true
		return t
	}
	lit := d.b[d.i : d.i+n+2]
	if bytes.IndexByte(lit, '\\') >= 0 || t.UnmarshalJSON(lit) != nil {
		d.bad = true
		return time.Time{}
	}
	d.i += len(lit)
	return t
}

// number reads a JSON number literal.
func (d *dec) number() []byte {
	if d.bad {
		return nil
	}
	end, ok := skipNumber(d.b, d.i)
	if !ok {
		d.bad = true
		return nil
	}
	lit := d.b[d.i:end]
	d.i = end
	return lit
}

// float reads a number into a float64 as encoding/json does.
func (d *dec) float() float64 {
	lit := d.number()
	if d.bad {
		return 0
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		d.bad = true
		return 0
	}
	return f
}

// int reads an integer literal as encoding/json reads it into an int64 (or
// an int, which is 64 bits wide where nodes run; a wider value than an int
// holds would make encoding/json fail, so it gives up too).
func (d *dec) int() int64 {
	lit := d.number()
	if d.bad || bytes.ContainsAny(lit, ".eE") {
		d.bad = true
		return 0
	}
	v, err := strconv.ParseInt(string(lit), 10, strconv.IntSize)
	if err != nil {
		d.bad = true
		return 0
	}
	return v
}

// raw reads any JSON value (compact, nesting at most maxRawDepth deep) and
// returns a copy of its bytes, as json.RawMessage.UnmarshalJSON does.
func (d *dec) raw() json.RawMessage {
	if d.bad {
		return nil
	}
	end, ok := skipValue(d.b, d.i, 0)
	if !ok {
		d.bad = true
		return nil
	}
	v := bytes.Clone(d.b[d.i:end])
	d.i = end
	return v
}

// maxRawDepth bounds the nesting of raw values the fast path reads
// (encoding/json allows 10000 in all; deeper ones go to it).
const maxRawDepth = 64

// skipValue returns the end of the compact JSON value at b[i:], validating
// it as strictly as encoding/json's scanner or more (no whitespace).
func skipValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxRawDepth {
			return 0, false
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i++
		if i < len(b) && b[i] == closer {
			return i + 1, true
		}
		for {
			var ok bool
			if c == '{' {
				if i, ok = skipString(b, i); !ok || i >= len(b) || b[i] != ':' {
					return 0, false
				}
				i++
			}
			if i, ok = skipValue(b, i, depth+1); !ok || i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case ',':
				i++
			case closer:
				return i + 1, true
			default:
				return 0, false
			}
		}
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	default:
		return skipNumber(b, i)
	}
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// skipString returns the end of the string at b[i:] (after its closing
// quote): bytes from 0x20 up, escapes as JSON defines them.
func skipString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i < 5 {
					return 0, false
				}
				for _, h := range b[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return 0, false
					}
				}
				i += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

// skipNumber returns the end of the number at b[i:]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, bool) {
	digits := func(i int) int {
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(i + 1)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

package schema_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// sampleState is a state in the current schema that survives v1 too: times
// in UTC at millisecond precision, session ids equal to client ids. Its lists
// are deliberately not in canonical order.
func sampleState() *schema.State {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	return &schema.State{
		Tasks: []schema.Task{
			{TaskID: "t-2", Title: "Resize images", Description: "thumbnails <& originals>", Status: schema.TaskActive,
				Progress: 42, Checkpoint: json.RawMessage(`{"step":21}`),
				Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 50, StepSeconds: 0.1}, StepsDone: 21,
				CreatedAt: at(0), UpdatedAt: at(2_100)},
			{TaskID: "t-1", Title: "Import", Status: schema.TaskCompleted, Progress: 100,
				Result: json.RawMessage(`{"rows":10}`), CreatedAt: at(-5_000), UpdatedAt: at(-1_001)},
			{TaskID: "t-3", Title: "Broken", Status: schema.TaskFailed, Progress: 12.5, Error: "disk full",
				CreatedAt: at(1), UpdatedAt: at(7)},
			{TaskID: "t-4", Title: "Later", Status: schema.TaskPending, CreatedAt: at(3), UpdatedAt: at(3)},
			{TaskID: "t-5", Title: "Parked", Status: schema.TaskSuspended, Progress: 57,
				Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 7, StepSeconds: 1.001}, StepsDone: 4,
				CreatedAt: at(4), UpdatedAt: at(9)},
		},
		Sessions: []schema.Session{
			{SessionID: "c2", ClientID: "c2", ConnectedAt: at(10), LastActivity: at(20), Requests: 1},
			{SessionID: "c1", ClientID: "c1", ClientKind: "go", ConnectedAt: at(-60_000), LastActivity: at(1_500),
				Requests: 12, Reconnects: 2, ReconnectSeconds: 1.003},
		},
		Replies: []schema.KeptReply{
			{RequestID: "r-2", ClientID: "c1", Reply: json.RawMessage(`{"type":"io.restartcoord.v1.task_reply","ok":true}`), At: at(900)},
			{RequestID: "r-1", ClientID: "c1", Reply: json.RawMessage(`{"ok":true}`), At: at(800)},
			{RequestID: "r-0", ClientID: "c2", Reply: json.RawMessage(`{"ok":false}`), At: at(900)},
		},
		ConfigVersion: "cfg-3",
	}
}

// canonical returns a canonically ordered copy of st.
func canonical(st *schema.State) *schema.State {
	c := *st
	c.Tasks = slices.Clone(st.Tasks)
	c.Sessions = slices.Clone(st.Sessions)
	c.Replies = slices.Clone(st.Replies)
	c.Canonical()
	return &c
}

func mustSnapshot(t *testing.T, st *schema.State, version int) *schema.Snapshot {
	t.Helper()
	s, err := schema.NewSnapshot("node-1", "snap-1", "restart", t0.Add(time.Hour), 1234, st, version)
	if err != nil {
		t.Fatalf("NewSnapshot v%d: %v", version, err)
	}
	return s
}

func mustMarshal(t *testing.T, s *schema.Snapshot) []byte {
	t.Helper()
	data, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestSnapshotRoundTrip(t *testing.T) {
	want := canonical(sampleState())
	s := mustSnapshot(t, sampleState(), schema.CurrentSchemaVersion)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(s.Checksum) {
		t.Errorf("got checksum %q, want sha256:<64 hex>", s.Checksum)
	}
	if s.SchemaVersion != 2 || s.NodeID != "node-1" || s.SnapshotID != "snap-1" || s.JournalSeq != 1234 ||
		s.Trigger != "restart" || !s.TakenAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("got header %+v, want the values given", s)
	}
	data := mustMarshal(t, s)
	got, err := schema.UnmarshalSnapshot(data)
	if err != nil {
		t.Fatalf("UnmarshalSnapshot: %v", err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("got %+v, want %+v", got, s)
	}
	st, from, err := got.State()
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if from != 2 {
		t.Errorf("got from %d, want 2", from)
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("got state %+v, want %+v", st, want)
	}
	if again := mustMarshal(t, got); !bytes.Equal(again, data) {
		t.Errorf("re-marshaled snapshot differs:\ngot  %s\nwant %s", again, data)
	}
}

func TestSnapshotTakenAtIsUTC(t *testing.T) {
	zone := time.FixedZone("CET", 3600)
	s, err := schema.NewSnapshot("node-1", "snap-1", "manual", t0.In(zone), 0, &schema.State{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if s.TakenAt.Location() != time.UTC || !s.TakenAt.Equal(t0) {
		t.Errorf("got taken_at %v, want %v in UTC", s.TakenAt, t0)
	}
	// The same instant written with an offset still verifies.
	data := bytes.Replace(mustMarshal(t, s), []byte(`"2024-03-01T12:00:00Z"`), []byte(`"2024-03-01T13:00:00+01:00"`), 1)
	if _, err := schema.UnmarshalSnapshot(data); err != nil {
		t.Errorf("got %v, want the same instant in another zone accepted", err)
	}
}

func TestSnapshotTamperDetected(t *testing.T) {
	data := mustMarshal(t, mustSnapshot(t, sampleState(), 2))
	cases := []struct{ name, old, new string }{
		{"task title", `"title":"Resize images"`, `"title":"Resize imagez"`},
		{"task progress", `"progress":42,`, `"progress":43,`},
		{"task status", `"status":"failed"`, `"status":"active"`},
		{"checkpoint", `{"step":21}`, `{"step":22}`},
		{"payload whitespace", `"tasks":[`, `"tasks": [`},
		{"journal_seq", `"journal_seq":1234`, `"journal_seq":1235`},
		{"node_id", `"node_id":"node-1"`, `"node_id":"node-2"`},
		{"snapshot_id", `"snapshot_id":"snap-1"`, `"snapshot_id":"snap-2"`},
		{"trigger", `"trigger":"restart"`, `"trigger":"manual"`},
		{"taken_at", `"taken_at":"2024-03-01T13:00:00Z"`, `"taken_at":"2024-03-01T13:00:00.001Z"`},
		{"schema_version", `"schema_version":2`, `"schema_version":1`},
		{"checksum", `"checksum":"sha256:`, `"checksum":"sha256:0`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(data, []byte(tc.old)) {
				t.Fatalf("snapshot %s does not contain %s", data, tc.old)
			}
			bad := bytes.Replace(data, []byte(tc.old), []byte(tc.new), 1)
			s, err := schema.UnmarshalSnapshot(bad)
			wantErr(t, err, schema.CodeStateCorruption, "")
			if s != nil {
				t.Errorf("got snapshot %+v, want nil", s)
			}
			if err != nil && !strings.Contains(err.Error(), "checksum mismatch") {
				t.Errorf("got %v, want a checksum mismatch", err)
			}
		})
	}
}

func TestUnmarshalSnapshotUnreadable(t *testing.T) {
	for name, body := range map[string]string{
		"empty":         ``,
		"not JSON":      `snapshot`,
		"truncated":     `{"schema_version":2,"payload":{"tasks":[`,
		"null":          `null`,
		"empty object":  `{}`,
		"array":         `[]`,
		"wrong type":    `{"schema_version":"2"}`,
		"bad taken_at":  `{"taken_at":"yesterday"}`,
		"payload empty": `{"schema_version":2,"checksum":"sha256:00"}`,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := schema.UnmarshalSnapshot([]byte(body))
			wantErr(t, err, schema.CodeStateCorruption, "")
			if s != nil {
				t.Errorf("got snapshot %+v, want nil", s)
			}
		})
	}
}

// sealed builds a stored snapshot of any version with a correct checksum.
func sealed(t *testing.T, version int, payload string) []byte {
	t.Helper()
	s := &schema.Snapshot{SchemaVersion: version, NodeID: "node-1", SnapshotID: "snap-v", TakenAt: t0,
		JournalSeq: 9, Trigger: "manual", Payload: json.RawMessage(payload)}
	s.Checksum = s.ComputeChecksum()
	return mustMarshal(t, s)
}

func TestSnapshotUnknownSchemaVersionRefused(t *testing.T) {
	for _, v := range []int{0, -1, 3, 99} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			s, err := schema.UnmarshalSnapshot(sealed(t, v, `{"tasks":[],"sessions":[],"replies":[],"config_version":""}`))
			wantErr(t, err, schema.CodeStateCorruption, "")
			if s != nil {
				t.Errorf("got snapshot, want nil")
			}
			if err != nil && !strings.Contains(err.Error(), "schema version") {
				t.Errorf("got %v, want it to name the schema version", err)
			}
		})
	}
	if _, err := schema.NewSnapshot("node-1", "s", "manual", t0, 0, sampleState(), 3); err == nil {
		t.Errorf("NewSnapshot v3: got no error, want one")
	} else {
		wantErr(t, err, schema.CodeStateCorruption, "")
	}
}

func TestSnapshotV1MigratesOnLoad(t *testing.T) {
	s := mustSnapshot(t, sampleState(), 1)
	if s.SchemaVersion != 1 {
		t.Fatalf("got schema_version %d, want 1", s.SchemaVersion)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(s.Payload, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tasks", "clients", "replies", "config"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("v1 payload %s: got no %q, want it", s.Payload, k)
		}
	}
	loaded, err := schema.UnmarshalSnapshot(mustMarshal(t, s))
	if err != nil {
		t.Fatalf("UnmarshalSnapshot v1: %v", err)
	}
	st, from, err := loaded.State()
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if from != 1 {
		t.Errorf("got from %d, want 1", from)
	}
	if want := canonical(sampleState()); !reflect.DeepEqual(st, want) {
		gotJSON, _ := json.Marshal(st)
		wantJSON, _ := json.Marshal(want)
		t.Errorf("got state\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}

func TestSnapshotStateCorruptPayload(t *testing.T) {
	cases := []struct {
		name    string
		version int
		payload string
	}{
		{"v2 wrong type", 2, `{"tasks":"none"}`},
		{"v2 bad time", 2, `{"tasks":[{"task_id":"t1","created_at":"noon"}]}`},
		{"v1 unknown state", 1, `{"tasks":[{"id":"t1","state":"stopped"}]}`},
		{"v1 wrong type", 1, `{"tasks":[{"id":"t1","state":"done","progress":"half"}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := schema.UnmarshalSnapshot(sealed(t, tc.version, tc.payload))
			if err != nil {
				t.Fatalf("UnmarshalSnapshot: %v (the checksum is right, the payload is read later)", err)
			}
			st, from, err := s.State()
			wantErr(t, err, schema.CodeStateCorruption, "")
			if st != nil || from != tc.version {
				t.Errorf("got state %v from %d, want nil from %d", st, from, tc.version)
			}
		})
	}
}

func TestCanonicalOrderGivesEqualBytes(t *testing.T) {
	a := sampleState()
	b := sampleState()
	// Reverse every list of b.
	for i, j := 0, len(b.Tasks)-1; i < j; i, j = i+1, j-1 {
		b.Tasks[i], b.Tasks[j] = b.Tasks[j], b.Tasks[i]
	}
	b.Sessions[0], b.Sessions[1] = b.Sessions[1], b.Sessions[0]
	b.Replies[0], b.Replies[2] = b.Replies[2], b.Replies[0]
	if reflect.DeepEqual(a, b) {
		t.Fatal("test states are in the same order")
	}
	for _, v := range []int{1, 2} {
		pa, err := schema.EncodeState(a, v)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := schema.EncodeState(b, v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pa, pb) {
			t.Errorf("v%d: got different payloads\n%s\n%s", v, pa, pb)
		}
		sa := mustSnapshot(t, sampleState(), v)
		sb := mustSnapshot(t, b, v)
		if sa.Checksum != sb.Checksum {
			t.Errorf("v%d: got checksums %s and %s, want equal", v, sa.Checksum, sb.Checksum)
		}
	}
	c := canonical(sampleState())
	var ids []string
	for _, tk := range c.Tasks {
		ids = append(ids, tk.TaskID)
	}
	if got := strings.Join(ids, ","); got != "t-1,t-2,t-3,t-4,t-5" {
		t.Errorf("got task order %s, want by task_id", got)
	}
	if c.Sessions[0].SessionID != "c1" {
		t.Errorf("got first session %s, want c1", c.Sessions[0].SessionID)
	}
	var reqs []string
	for _, r := range c.Replies {
		reqs = append(reqs, r.RequestID)
	}
	if got := strings.Join(reqs, ","); got != "r-1,r-0,r-2" {
		t.Errorf("got reply order %s, want by time then request_id (r-1,r-0,r-2)", got)
	}
}

// The valid snapshots of the fuzz seed corpus were written by an earlier
// build: they must stay readable (stored snapshots outlive binaries).
func TestStoredSnapshotsStayReadable(t *testing.T) {
	for _, tc := range []struct {
		file string
		from int
	}{{"seed-valid-v1", 1}, {"seed-valid-v2", 2}} {
		t.Run(tc.file, func(t *testing.T) {
			data := readCorpusBytes(t, filepath.Join("testdata", "fuzz", "FuzzUnmarshalSnapshot", tc.file))
			s, err := schema.UnmarshalSnapshot(data)
			if err != nil {
				t.Fatalf("UnmarshalSnapshot: %v", err)
			}
			st, from, err := s.State()
			if err != nil || from != tc.from {
				t.Fatalf("State: got (from %d, %v), want (from %d, nil)", from, err, tc.from)
			}
			if len(st.Tasks) != 1 || st.Tasks[0].Title != "Resize" || st.Tasks[0].Progress != 42 ||
				st.Tasks[0].Job == nil || st.Tasks[0].Job.StepSeconds != 0.1 || len(st.Sessions) != 1 || len(st.Replies) != 1 {
				t.Errorf("got state %+v, want the fuzz seed state", st)
			}
		})
	}
}

// readCorpusBytes reads the single []byte value of a go fuzz corpus file.
func readCorpusBytes(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
		!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		t.Fatalf("%s: not a one-value go fuzz corpus file", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}

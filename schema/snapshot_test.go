package schema_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
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

// --- the framed format and the fast paths -------------------------------------

// trickyStrings are strings encoding/json does not copy as they are, or
// only just does.
var trickyStrings = []string{
	"", "plain", `quote " and backslash \\`, "<b>&amp;</b>", "tab\tnew\nline\r", "\x00\x01\x1f\x7f",
	"héllo wörld ☃ 𝄞", "line\u2028sep\u2029para", "bad utf8 \xff\xfe \xc3", "\u00e9 as escape", "ends in backslash\\",
	strings.Repeat("forty-two bytes of description per line. ", 20), "</script>", "\ufffd",
}

var trickyRaws = []json.RawMessage{
	nil, json.RawMessage(`{"step":21}`), json.RawMessage(`{ "spaced" : [1, 2, {"a" : null}] }`),
	json.RawMessage(`"<html> & co"`), json.RawMessage(`[true,false,null,-0,1.5e-7,1E+30,"\u2028"]`),
	json.RawMessage("\"\u2028 raw line separator\""), json.RawMessage(`{"nested":{"deeper":{"deepest":[[[[]]]]}}}`),
	json.RawMessage(`"\ud800 lone surrogate escape"`), json.RawMessage(`123456789012345678901234567890`),
}

var trickyFloats = []float64{0, math.Copysign(0, -1), 42, 12.5, 57, 99.99999999, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 123456789.125, -3.5, math.SmallestNonzeroFloat64, math.MaxFloat64}

// richState is a state of n tasks (and as many kept replies) that visits
// every optional field and the tricky values above.
func richState(n int) *schema.State {
	zone := time.FixedZone("odd", -(3*3600 + 30*60))
	st := &schema.State{ConfigVersion: "cfg-<7>", Sessions: []schema.Session{}, Replies: []schema.KeptReply{}}
	for i := range n {
		at := t0.Add(time.Duration(i) * 1234567 * time.Nanosecond)
		if i%3 == 1 {
			at = at.In(zone)
		}
		tk := schema.Task{TaskID: fmt.Sprintf("t-%05d", i), Title: trickyStrings[i%len(trickyStrings)],
			Status: schema.TaskStatuses[i%len(schema.TaskStatuses)], Progress: trickyFloats[i%len(trickyFloats)],
			CreatedAt: at, UpdatedAt: at.Add(time.Duration(i%5) * time.Millisecond)}
		if i%2 == 0 {
			tk.Description = trickyStrings[(i/2)%len(trickyStrings)]
		}
		if i%4 == 1 {
			tk.Checkpoint = trickyRaws[(i/4)%len(trickyRaws)]
		}
		if i%5 == 2 {
			tk.Result = trickyRaws[(i/5)%len(trickyRaws)]
		}
		if i%6 == 3 {
			tk.Error = trickyStrings[(i/6)%len(trickyStrings)]
		}
		if i%7 == 4 {
			tk.Job = &schema.Job{Kind: schema.JobKindSteps, Steps: i, StepSeconds: trickyFloats[(i/7)%len(trickyFloats)]}
			tk.StepsDone = i / 2
		}
		st.Tasks = append(st.Tasks, tk)
		r := schema.KeptReply{RequestID: fmt.Sprintf("r-%05d", i), ClientID: trickyStrings[i%3], At: at}
		switch i % 3 {
		case 0:
			r.TaskRef = tk.TaskID
		case 1:
			r.Reply = trickyRaws[(i/3)%len(trickyRaws)]
			if r.Reply == nil {
				r.Reply = json.RawMessage(`{"ok":true}`)
			}
		case 2:
			r.TaskRef = "t-missing"
		}
		st.Replies = append(st.Replies, r)
		if i%100 == 0 {
			st.Sessions = append(st.Sessions, schema.Session{SessionID: fmt.Sprintf("s-%d", i), ClientID: trickyStrings[i%5],
				ClientKind: []string{"", "go"}[i%2], ConnectedAt: at, LastActivity: at.Add(time.Second),
				Requests: int64(i) << 33, Reconnects: i, ReconnectSeconds: trickyFloats[i%len(trickyFloats)]})
		}
	}
	return st
}

// The payload is json.Marshal of the canonical state, byte for byte,
// whatever path encoded it (the checksum and old binaries depend on it).
func TestEncodeStateIsEncodingJSON(t *testing.T) {
	for _, n := range []int{0, 1, 5, 511, 512, 513, 1500} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			want, err := json.Marshal(canonical(richState(n)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := schema.EncodeState(richState(n), schema.CurrentSchemaVersion)
			if err != nil {
				t.Fatal(err)
			}
			s := mustSnapshot(t, richState(n), schema.CurrentSchemaVersion)
			if !bytes.Equal(s.Payload, want) || s.Checksum != s.ComputeChecksum() {
				t.Errorf("NewSnapshot: payload equal %v, checksum %s, computed %s", bytes.Equal(s.Payload, want), s.Checksum, s.ComputeChecksum())
			}
			if !bytes.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("payload differs from json.Marshal at byte %d:\ngot  %.200s\nwant %.200s", i, got[i:], want[i:])
			}
		})
	}
	for name, st := range map[string]*schema.State{"zero": {}, "nil lists": {ConfigVersion: "x"},
		"empty lists": {Tasks: []schema.Task{}, Sessions: []schema.Session{}, Replies: []schema.KeptReply{}}} {
		want, _ := json.Marshal(st)
		got, err := schema.EncodeState(st, schema.CurrentSchemaVersion)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %s, %v, want %s", name, got, err, want)
		}
	}
}

// What encoding/json refuses, EncodeState refuses.
func TestEncodeStateRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for name, mut := range map[string]func(*schema.Task){
		"NaN progress": func(tk *schema.Task) { tk.Progress = math.NaN() },
		"Inf step":     func(tk *schema.Task) { tk.Job = &schema.Job{StepSeconds: math.Inf(1)} },
		"year 10000":   func(tk *schema.Task) { tk.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"bad raw":      func(tk *schema.Task) { tk.Checkpoint = json.RawMessage(`{"a":`) },
		"two raws":     func(tk *schema.Task) { tk.Result = json.RawMessage(`1 2`) },
		"raw too large": func(tk *schema.Task) {
			tk.Result = json.RawMessage(`[` + strings.Repeat(`[`, 70) + strings.Repeat(`]`, 70) + `]`)
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := richState(600)
			mut(&st.Tasks[300])
			want, wantErr := json.Marshal(canonical(st))
			got, err := schema.EncodeState(st, schema.CurrentSchemaVersion)
			if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
				t.Fatalf("got (%.60s, %v), want (%.60s, %v)", got, err, want, wantErr)
			}
		})
	}
}

// State() decodes exactly what encoding/json decodes, with the index, without
// it, and with an index that lies.
func TestStateIsEncodingJSON(t *testing.T) {
	for _, n := range []int{0, 7, 600, 1500} {
		s := mustSnapshot(t, richState(n), schema.CurrentSchemaVersion)
		if n >= 512 && len(s.TasksIndex) < 3 {
			t.Fatalf("%d tasks: got index %v, want one offset per chunk and the end (the fast encoder is off: "+
				"did a type of the state change? update schema/snapshot.go's encoder and decoder)", n, s.TasksIndex)
		}
		want := &schema.State{}
		if err := json.Unmarshal(s.Payload, want); err != nil {
			t.Fatal(err)
		}
		indexes := map[string][]int{"stored": s.TasksIndex, "none": nil}
		if len(s.TasksIndex) > 2 {
			shifted := slices.Clone(s.TasksIndex)
			shifted[1] += 5
			indexes["shifted"] = shifted
			indexes["short"] = s.TasksIndex[:2]
			indexes["one chunk"] = []int{s.TasksIndex[0], s.TasksIndex[len(s.TasksIndex)-1]}
			indexes["past the end"] = []int{s.TasksIndex[0], len(s.Payload) + 10}
			indexes["backwards"] = []int{s.TasksIndex[2], s.TasksIndex[1], s.TasksIndex[len(s.TasksIndex)-1]}
			indexes["negative"] = []int{-5, s.TasksIndex[len(s.TasksIndex)-1]}
		}
		for name, index := range indexes {
			t.Run(fmt.Sprintf("%d/%s", n, name), func(t *testing.T) {
				c := *s
				c.TasksIndex = index
				got, from, err := c.State()
				if err != nil || from != 2 {
					t.Fatalf("State: %v (from %d)", err, from)
				}
				if !reflect.DeepEqual(got, want) {
					for i := range min(len(got.Tasks), len(want.Tasks)) {
						if !reflect.DeepEqual(got.Tasks[i], want.Tasks[i]) {
							t.Fatalf("task %d:\ngot  %#v\nwant %#v", i, got.Tasks[i], want.Tasks[i])
						}
					}
					t.Fatalf("got a state that differs from json.Unmarshal (%d/%d tasks, %d/%d replies)",
						len(got.Tasks), len(want.Tasks), len(got.Replies), len(want.Replies))
				}
			})
		}
	}
}

// A changed task anywhere in a large snapshot is a checksum mismatch.
func TestLargeSnapshotTamperDetected(t *testing.T) {
	data := mustMarshal(t, mustSnapshot(t, benchState(2000), schema.CurrentSchemaVersion))
	for _, id := range []string{benchTaskID(0), benchTaskID(1000), benchTaskID(1999)} {
		i := bytes.Index(data, []byte(`"task_id":"`+id+`","title":"task `))
		if i < 0 {
			t.Fatalf("no task %s in the snapshot", id)
		}
		bad := slices.Clone(data)
		bad[i+len(`"task_id":"`+id+`","title":"task `)] ^= 1 // task 1000 -> task 0000 and so on
		_, err := schema.UnmarshalSnapshot(bad)
		wantErr(t, err, schema.CodeStateCorruption, "")
		if err != nil && !strings.Contains(err.Error(), "checksum mismatch") {
			t.Errorf("task %s: got %v, want a checksum mismatch", id, err)
		}
	}
}

// The stored form: a JSON header line, then the payload as it is.
func TestSnapshotFramedForm(t *testing.T) {
	s := mustSnapshot(t, benchState(1000), schema.CurrentSchemaVersion)
	data := mustMarshal(t, s)
	head, payload, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		t.Fatal("no header line")
	}
	var h map[string]any
	if err := json.Unmarshal(head, &h); err != nil {
		t.Fatalf("header %s: %v", head, err)
	}
	if h["format"] != "restartcoord-snapshot-framed-1" || h["checksum"] != s.Checksum || h["snapshot_id"] != "snap-1" ||
		h["schema_version"] != 2.0 || h["journal_seq"] != 1234.0 || h["tasks_index"] == nil || h["canonical"] != true {
		t.Errorf("got header %s", head)
	}
	if !bytes.Equal(payload, s.Payload) || !json.Valid(payload) {
		t.Errorf("the payload is not stored as it is")
	}
	got, err := schema.UnmarshalSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("round trip changed the snapshot")
	}
	for name, bad := range map[string][]byte{
		"no newline":     head,
		"unknown format": bytes.Replace(data, []byte("framed-1"), []byte("framed-9"), 1),
		"bad header":     bytes.Replace(data, []byte(`"journal_seq":1234`), []byte(`"journal_seq":"x"`), 1),
		"truncated":      data[:len(data)-1],
		"not canonical":  bytes.Replace(data, []byte(`"canonical":true,`), nil, 1),
		"no payload":     append(slices.Clone(head), '\n'),
	} {
		if _, err := schema.UnmarshalSnapshot(bad); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			wantErr(t, err, schema.CodeStateCorruption, "")
		}
	}
	if _, err := (&schema.Snapshot{SnapshotID: "x"}).Marshal(); err == nil {
		t.Error("Marshal of a snapshot without payload: got no error")
	}
}

// StateAndReplies gives State() and the replies RefReplyBodies builds,
// whether they are made of the payload's bytes (a canonical snapshot) or
// encoded again (one that does not say it is).
func TestStateAndReplies(t *testing.T) {
	for _, n := range []int{0, 7, 600, 1500} {
		st := richState(n)
		st.Replies = append(st.Replies, schema.KeptReply{RequestID: "", ClientID: "c", TaskRef: "t-00000", At: t0},
			schema.KeptReply{RequestID: "<&>\u2028", ClientID: "c", TaskRef: "t-00001", At: t0})
		s := mustSnapshot(t, st, schema.CurrentSchemaVersion)
		if !s.Canonical {
			t.Fatal("NewSnapshot did not mark its payload canonical")
		}
		want, _, err := s.State()
		if err != nil {
			t.Fatal(err)
		}
		wantBodies := want.RefReplyBodies()
		plain := *s
		plain.Canonical = false
		plain.Checksum = plain.ComputeChecksum()
		noIndex := *s
		noIndex.TasksIndex = nil
		for name, c := range map[string]*schema.Snapshot{"canonical": s, "not canonical": &plain, "no index": &noIndex} {
			got, bodies, from, err := c.StateAndReplies()
			if err != nil || from != 2 {
				t.Fatalf("%d/%s: %v (from %d)", n, name, err, from)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%d/%s: state differs from State()", n, name)
			}
			if len(bodies) != len(want.Replies) {
				t.Fatalf("%d/%s: %d bodies for %d replies", n, name, len(bodies), len(want.Replies))
			}
			for i := range bodies {
				if !bytes.Equal(bodies[i], wantBodies[i]) {
					t.Fatalf("%d/%s: reply %d:\ngot  %s\nwant %s", n, name, i, bodies[i], wantBodies[i])
				}
			}
		}
	}
	// A v1 snapshot: migrated, then encoded again.
	s := mustSnapshot(t, sampleState(), 1)
	if s.Canonical {
		t.Error("a v1 snapshot says its payload is canonical")
	}
	st, bodies, from, err := s.StateAndReplies()
	if err != nil || from != 1 || len(bodies) != len(st.Replies) {
		t.Fatalf("v1: %v, from %d, %d bodies", err, from, len(bodies))
	}
}

// RefReplyBodies builds, byte for byte, what TaskReplyBody builds.
func TestRefReplyBodiesAreTaskReplyBody(t *testing.T) {
	st := richState(300)
	// Every byte value at every position of an eight-byte word, in a title.
	for c := range 256 {
		for pos := range 9 {
			b := []byte("abcdefghijklmnopq")
			b[pos] = byte(c)
			id := fmt.Sprintf("x-%03d-%d", c, pos)
			st.Tasks = append(st.Tasks, schema.Task{TaskID: id, Title: string(b), Description: string(b[pos:]), CreatedAt: t0, UpdatedAt: t0})
			st.Replies = append(st.Replies, schema.KeptReply{RequestID: "q" + string(b), TaskRef: id, At: t0})
		}
	}
	st.Replies = append(st.Replies, schema.KeptReply{RequestID: "", TaskRef: "t-00003", At: t0})
	tasks := map[string]*schema.Task{}
	for i := range st.Tasks {
		tasks[st.Tasks[i].TaskID] = &st.Tasks[i]
	}
	bodies := st.RefReplyBodies()
	if len(bodies) != len(st.Replies) {
		t.Fatalf("got %d bodies for %d replies", len(bodies), len(st.Replies))
	}
	refs := 0
	for i, r := range st.Replies {
		tk, ok := tasks[r.TaskRef]
		if r.TaskRef == "" || !ok {
			if bodies[i] != nil {
				t.Errorf("reply %s without a task: got a body", r.RequestID)
			}
			continue
		}
		refs++
		if want := schema.TaskReplyBody(r.RequestID, tk, nil); !bytes.Equal(bodies[i], want) {
			t.Fatalf("reply %q:\ngot  %s\nwant %s", r.RequestID, bodies[i], want)
		}
	}
	if refs < 2000 {
		t.Fatalf("only %d replies by reference", refs)
	}
	// And what ExpandReplies does with them.
	c := canonical(st)
	if err := c.ExpandReplies(); err == nil {
		t.Fatal("ExpandReplies accepted a reference to a missing task")
	}
}

// Stored snapshots of the framed form stay readable too.
func TestStoredFramedSnapshotsStayReadable(t *testing.T) {
	for _, tc := range []struct {
		file string
		from int
	}{{"seed-valid-framed-v1", 1}, {"seed-valid-framed-v2", 2}, {"seed-valid-framed-canonical-v2", 2}} {
		t.Run(tc.file, func(t *testing.T) {
			data := readCorpusBytes(t, filepath.Join("testdata", "fuzz", "FuzzUnmarshalSnapshot", tc.file))
			if !bytes.HasPrefix(data, []byte(`{"format":"restartcoord-snapshot-framed-1"`)) {
				t.Fatalf("%s is not framed", tc.file)
			}
			s, err := schema.UnmarshalSnapshot(data)
			if err != nil {
				t.Fatalf("UnmarshalSnapshot: %v", err)
			}
			st, from, err := s.State()
			if err != nil || from != tc.from {
				t.Fatalf("State: got (from %d, %v), want (from %d, nil)", from, err, tc.from)
			}
			if want := canonical(smallStateForCorpus()); !reflect.DeepEqual(st, want) {
				t.Errorf("got state %+v, want %+v", st, want)
			}
		})
	}
}

// smallStateForCorpus is fuzz_test.go's smallState, the state of the seeds.
func smallStateForCorpus() *schema.State { return smallState() }

// FuzzCanonicalDecode seals any payload as a current-schema snapshot, with
// any task index, and checks State() against encoding/json: both refuse, or
// both give the same state.
func FuzzCanonicalDecode(f *testing.F) {
	for _, st := range []*schema.State{smallState(), richState(3), richState(520), {}} {
		s, err := schema.NewSnapshot("n", "s", "manual", t0, 1, st, schema.CurrentSchemaVersion)
		if err != nil {
			f.Fatal(err)
		}
		var idx []byte
		for _, o := range s.TasksIndex {
			idx = binary.AppendUvarint(idx, uint64(o))
		}
		f.Add([]byte(s.Payload), idx)
	}
	f.Add([]byte(`{"tasks":[{"task_id":"a","title":"b","status":"active","progress":1e400,"created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z"}],"sessions":null,"replies":null,"config_version":""}`), []byte{10, 20})
	f.Add([]byte(`{"tasks":null,"sessions":[],"replies":[],"config_version":"\u0041"}`), []byte(nil))
	f.Fuzz(func(t *testing.T, payload, idx []byte) {
		var index []int
		for len(idx) > 0 {
			v, n := binary.Uvarint(idx)
			if n <= 0 {
				break
			}
			index, idx = append(index, int(v)), idx[n:]
		}
		s := &schema.Snapshot{SchemaVersion: schema.CurrentSchemaVersion, NodeID: "n", SnapshotID: "s", TakenAt: t0,
			Trigger: "manual", Payload: payload, TasksIndex: index}
		got, _, err := s.State()
		want := &schema.State{}
		wantErr := json.Unmarshal(payload, want)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("State: %v; encoding/json: %v", err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("State differs from encoding/json:\ngot  %+v\nwant %+v", got, want)
		}
	})
}

// Random damage to a canonical payload (a byte changed, dropped, doubled):
// State() still decodes exactly what encoding/json does, or refuses with it.
func TestStateOfDamagedPayloadsIsEncodingJSON(t *testing.T) {
	s := mustSnapshot(t, richState(40), schema.CurrentSchemaVersion)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]",:\0123456789.eE+-tfnulrasx ` + "\x00\x1f\x7f\xc3\xe2\xff")
	n := 4000
	if testing.Short() {
		n = 500
	}
	for range n {
		p := slices.Clone([]byte(s.Payload))
		for range 1 + rng.IntN(3) {
			i := rng.IntN(len(p))
			switch rng.IntN(3) {
			case 0:
				p[i] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				p = slices.Delete(p, i, i+1)
			default:
				p = slices.Insert(p, i, p[i])
			}
		}
		c := &schema.Snapshot{SchemaVersion: 2, Payload: p}
		got, _, err := c.State()
		want := &schema.State{}
		wantErr := json.Unmarshal(p, want)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("payload %s\nState: %v; encoding/json: %v", p, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("payload %s\nState differs from encoding/json", p)
		}
	}
}

// --- benchmarks ----------------------------------------------------------------

func benchTaskID(i int) string { return fmt.Sprintf("019%013d-%04x", i*7919, i) }

// benchState is the state of node's restart benchmarks: n tasks of ~1 KB
// and a kept reply by reference for each.
func benchState(n int) *schema.State {
	desc := strings.Repeat("forty-two bytes of description per line. ", 20)
	st := &schema.State{ConfigVersion: "cfg-1"}
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Microsecond)
		st.Tasks = append(st.Tasks, schema.Task{TaskID: benchTaskID(i), Title: fmt.Sprintf("task %d", i),
			Description: desc, Status: schema.TaskPending, CreatedAt: at, UpdatedAt: at})
		st.Replies = append(st.Replies, schema.KeptReply{RequestID: fmt.Sprintf("req-%d", i), ClientID: "c1", TaskRef: st.Tasks[i].TaskID, At: at})
	}
	for i := range 2 {
		st.Sessions = append(st.Sessions, schema.Session{SessionID: fmt.Sprintf("c%d", i), ClientID: fmt.Sprintf("c%d", i), ConnectedAt: t0, LastActivity: t0})
	}
	return st
}

// BenchmarkSnapshotWrite: encode, checksum, frame (what a graceful restart
// does before compressing and storing).
func BenchmarkSnapshotWrite10k(b *testing.B) {
	st := benchState(10000)
	for b.Loop() {
		s, err := schema.NewSnapshot("n", "s", "restart", t0, 1, st, schema.CurrentSchemaVersion)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotRead: unframe, verify, decode (what a new worker does
// after fetching and decompressing).
func BenchmarkSnapshotRead10k(b *testing.B) {
	s, _ := schema.NewSnapshot("n", "s", "restart", t0, 1, benchState(10000), schema.CurrentSchemaVersion)
	data, _ := s.Marshal()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s, err := schema.UnmarshalSnapshot(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.State(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotRestore10k: what a new worker does with the bytes:
// unframe, verify, decode, and rebuild the kept replies by reference.
func BenchmarkSnapshotRestore10k(b *testing.B) {
	s, _ := schema.NewSnapshot("n", "s", "restart", t0, 1, benchState(10000), schema.CurrentSchemaVersion)
	data, _ := s.Marshal()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s, err := schema.UnmarshalSnapshot(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, _, err := s.StateAndReplies(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRefReplyBodies10k(b *testing.B) {
	st := benchState(10000)
	for b.Loop() {
		st.RefReplyBodies()
	}
}

// The encoding/json baselines the above replace.
func BenchmarkEncodingJSONMarshal10k(b *testing.B) {
	st := benchState(10000)
	for b.Loop() {
		if _, err := json.Marshal(st); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodingJSONUnmarshal10k(b *testing.B) {
	data, _ := json.Marshal(benchState(10000))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var st schema.State
		if err := json.Unmarshal(data, &st); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTaskReplyBody10k(b *testing.B) {
	st := benchState(10000)
	for b.Loop() {
		for i := range st.Tasks {
			schema.TaskReplyBody("req-1", &st.Tasks[i], nil)
		}
	}
}

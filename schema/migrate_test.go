package schema_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// A payload in schema version 1 as the first release wrote it.
const v1Payload = `{
  "tasks": [
    {"id":"t-2","name":"Resize images","description":"thumbnails","state":"running","progress":0.42,
     "checkpoint":{"step":7},"job":{"steps":50,"step_ms":100,"done":7},
     "created_ms":1709294400000,"updated_ms":1709294400700},
    {"id":"t-1","name":"Import","state":"done","progress":1,"result":{"rows":10},
     "created_ms":1709294395000,"updated_ms":1709294398999},
    {"id":"t-3","name":"Parked","state":"paused","progress":0.57,"job":{"steps":7,"step_ms":1001,"done":4},
     "created_ms":1709294400004,"updated_ms":1709294400009},
    {"id":"t-4","name":"Broken","state":"error","progress":0.125,"error":"disk full",
     "created_ms":1709294400001,"updated_ms":1709294400007},
    {"id":"t-5","name":"Later","state":"pending","progress":0,"created_ms":1709294400003,"updated_ms":1709294400003}
  ],
  "clients": [
    {"id":"c2","connected_ms":1709294400010,"last_seen_ms":1709294400020,"requests":1},
    {"id":"c1","kind":"go","connected_ms":1709294340000,"last_seen_ms":1709294401500,"requests":12,
     "reconnects":2,"reconnect_ms":1003}
  ],
  "replies": [
    {"request_id":"r-2","client_id":"c1","reply":{"ok":true},"at_ms":1709294400900},
    {"request_id":"r-1","client_id":"c1","reply":{"ok":false},"at_ms":1709294400800}
  ],
  "config": "cfg-3"
}`

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func TestMigrateV1PayloadToV2(t *testing.T) {
	want := &schema.State{
		Tasks: []schema.Task{
			{TaskID: "t-1", Title: "Import", Status: schema.TaskCompleted, Progress: 100,
				Result: json.RawMessage(`{"rows":10}`), CreatedAt: msTime(1709294395000), UpdatedAt: msTime(1709294398999)},
			{TaskID: "t-2", Title: "Resize images", Description: "thumbnails", Status: schema.TaskActive, Progress: 42,
				Checkpoint: json.RawMessage(`{"step":7}`),
				Job:        &schema.Job{Kind: "steps", Steps: 50, StepSeconds: 0.1}, StepsDone: 7,
				CreatedAt: msTime(1709294400000), UpdatedAt: msTime(1709294400700)},
			{TaskID: "t-3", Title: "Parked", Status: schema.TaskSuspended, Progress: 57,
				Job: &schema.Job{Kind: "steps", Steps: 7, StepSeconds: 1.001}, StepsDone: 4,
				CreatedAt: msTime(1709294400004), UpdatedAt: msTime(1709294400009)},
			{TaskID: "t-4", Title: "Broken", Status: schema.TaskFailed, Progress: 12.5, Error: "disk full",
				CreatedAt: msTime(1709294400001), UpdatedAt: msTime(1709294400007)},
			{TaskID: "t-5", Title: "Later", Status: schema.TaskPending, Progress: 0,
				CreatedAt: msTime(1709294400003), UpdatedAt: msTime(1709294400003)},
		},
		Sessions: []schema.Session{
			{SessionID: "c1", ClientID: "c1", ClientKind: "go", ConnectedAt: msTime(1709294340000),
				LastActivity: msTime(1709294401500), Requests: 12, Reconnects: 2, ReconnectSeconds: 1.003},
			{SessionID: "c2", ClientID: "c2", ConnectedAt: msTime(1709294400010), LastActivity: msTime(1709294400020), Requests: 1},
		},
		Replies: []schema.KeptReply{
			{RequestID: "r-1", ClientID: "c1", Reply: json.RawMessage(`{"ok":false}`), At: msTime(1709294400800)},
			{RequestID: "r-2", ClientID: "c1", Reply: json.RawMessage(`{"ok":true}`), At: msTime(1709294400900)},
		},
		ConfigVersion: "cfg-3",
	}
	out, err := schema.Migrate(json.RawMessage(v1Payload), 1, 2)
	if err != nil {
		t.Fatalf("Migrate 1->2: %v", err)
	}
	var got schema.State
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("v2 payload %s: %v", out, err)
	}
	if !reflect.DeepEqual(&got, want) {
		wantJSON, _ := json.Marshal(want)
		t.Errorf("got\n%s\nwant\n%s", out, wantJSON)
	}
	if got.Tasks[1].CreatedAt.Location() != time.UTC {
		t.Errorf("got created_at in %v, want UTC", got.Tasks[1].CreatedAt.Location())
	}

	// The same payload inside a snapshot: State() migrates and reports from=1.
	s := &schema.Snapshot{SchemaVersion: 1, NodeID: "node-1", SnapshotID: "old", TakenAt: t0, Trigger: "restart",
		Payload: compact(t, v1Payload)}
	s.Checksum = s.ComputeChecksum()
	loaded, err := schema.UnmarshalSnapshot(mustMarshal(t, s))
	if err != nil {
		t.Fatalf("UnmarshalSnapshot: %v", err)
	}
	st, from, err := loaded.State()
	if err != nil || from != 1 || !reflect.DeepEqual(st, want) {
		t.Errorf("State(): got (%+v, %d, %v), want (the migrated state, 1, nil)", st, from, err)
	}
}

func compact(t *testing.T, s string) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(json.RawMessage(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMigrateV1StateWords(t *testing.T) {
	cases := []struct {
		word string
		want schema.TaskStatus
		code schema.Code
	}{
		{"pending", schema.TaskPending, ""},
		{"running", schema.TaskActive, ""},
		{"paused", schema.TaskSuspended, ""},
		{"done", schema.TaskCompleted, ""},
		{"error", schema.TaskFailed, ""},
		{"stopped", "", schema.CodeStateCorruption},
		{"active", "", schema.CodeStateCorruption},
		{"RUNNING", "", schema.CodeStateCorruption},
		{"", "", schema.CodeStateCorruption},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.word), func(t *testing.T) {
			out, err := schema.Migrate(json.RawMessage(`{"tasks":[{"id":"t1","name":"x","state":"`+tc.word+`"}]}`), 1, 2)
			wantErr(t, err, tc.code, "")
			if tc.code != "" {
				return
			}
			var st schema.State
			if err := json.Unmarshal(out, &st); err != nil {
				t.Fatal(err)
			}
			if len(st.Tasks) != 1 || st.Tasks[0].Status != tc.want {
				t.Errorf("got %s, want status %s", out, tc.want)
			}
		})
	}
}

func TestMigrateRefusesBadInput(t *testing.T) {
	cases := []struct {
		name     string
		payload  string
		from, to int
	}{
		{"v1 not JSON", `tasks`, 1, 2},
		{"v1 wrong type", `{"tasks":{}}`, 1, 2},
		{"v1 time out of range", `{"tasks":[{"id":"t1","state":"done","created_ms":9223372036854775807}]}`, 1, 2},
		{"v2 not JSON", `{`, 2, 1},
		{"to unknown version 3", `{}`, 2, 3},
		{"to unknown version 0", `{}`, 1, 0},
		{"from unknown version", `{}`, 7, 2},
		{"from negative version", `{}`, -1, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := schema.Migrate(json.RawMessage(tc.payload), tc.from, tc.to)
			wantErr(t, err, schema.CodeStateCorruption, "")
			if out != nil {
				t.Errorf("got payload %s, want nil", out)
			}
		})
	}
}

func TestMigrateSameVersionIsIdentity(t *testing.T) {
	for _, v := range []int{1, 2, 3} {
		in := json.RawMessage(`{"anything": [1]}`)
		out, err := schema.Migrate(in, v, v)
		if err != nil || string(out) != string(in) {
			t.Errorf("Migrate(%d,%d): got (%s, %v), want the payload unchanged", v, v, out, err)
		}
	}
}

func TestMigrateV2ToV1Shape(t *testing.T) {
	p2, err := schema.EncodeState(sampleState(), 2)
	if err != nil {
		t.Fatal(err)
	}
	p1, err := schema.Migrate(p2, 2, 1)
	if err != nil {
		t.Fatalf("Migrate 2->1: %v", err)
	}
	var v1 struct {
		Tasks []struct {
			ID       string  `json:"id"`
			Name     string  `json:"name"`
			State    string  `json:"state"`
			Progress float64 `json:"progress"`
			Job      *struct {
				Steps  int   `json:"steps"`
				StepMS int64 `json:"step_ms"`
				Done   int   `json:"done"`
			} `json:"job"`
			Created int64 `json:"created_ms"`
		} `json:"tasks"`
		Clients []struct {
			ID          string `json:"id"`
			ReconnectMS int64  `json:"reconnect_ms"`
		} `json:"clients"`
		Config string `json:"config"`
	}
	if err := json.Unmarshal(p1, &v1); err != nil {
		t.Fatal(err)
	}
	if len(v1.Tasks) != 5 || len(v1.Clients) != 2 || v1.Config != "cfg-3" {
		t.Fatalf("got %s, want 5 tasks, 2 clients, config cfg-3", p1)
	}
	tk := v1.Tasks[1] // t-2
	if tk.ID != "t-2" || tk.Name != "Resize images" || tk.State != "running" || tk.Progress != 0.42 ||
		tk.Job == nil || tk.Job.Steps != 50 || tk.Job.StepMS != 100 || tk.Job.Done != 21 || tk.Created != t0.UnixMilli() {
		t.Errorf("got task %+v (job %+v), want t-2 running 0.42 with steps 50 step_ms 100 done 21", tk, tk.Job)
	}
	if j := v1.Tasks[4].Job; j == nil || j.StepMS != 1001 {
		t.Errorf("got job %+v, want step_ms 1001 (step_seconds 1.001 rounded, not truncated)", j)
	}
	if c := v1.Clients[0]; c.ID != "c1" || c.ReconnectMS != 1003 {
		t.Errorf("got client %+v, want c1 with reconnect_ms 1003", c)
	}
}

// A state with times at millisecond precision survives v2 -> v1 -> v2.
func TestMigrateRoundTrip(t *testing.T) {
	base := sampleState()
	cases := map[string]*schema.State{
		"sample": base,
		"empty":  {Tasks: []schema.Task{}, Sessions: []schema.Session{}, Replies: []schema.KeptReply{}},
	}
	// Progress and step values whose float arithmetic does not come back
	// exactly without rounding.
	for i, p := range []float64{0.1, 0.57, 1.15, 2.3, 14.35, 33.333333, 56.7, 99.99, 12.345678} {
		st := &schema.State{Tasks: []schema.Task{{TaskID: fmt.Sprintf("t%d", i), Title: "x", Status: schema.TaskActive,
			Progress: p, Job: &schema.Job{Kind: "steps", Steps: 3, StepSeconds: 1 + float64(i*2+1)/1000},
			CreatedAt: t0, UpdatedAt: t0.Add(time.Duration(i) * time.Millisecond)}},
			Sessions: []schema.Session{{SessionID: "c", ClientID: "c", ReconnectSeconds: 4 + float64(i*2+1)/1000}},
			Replies:  []schema.KeptReply{}}
		cases[fmt.Sprintf("progress %v", p)] = st
	}
	for name, st := range cases {
		t.Run(name, func(t *testing.T) {
			want := canonical(st)
			p1, err := schema.EncodeState(st, 1)
			if err != nil {
				t.Fatalf("EncodeState v1: %v", err)
			}
			p2, err := schema.Migrate(p1, 1, 2)
			if err != nil {
				t.Fatalf("Migrate 1->2: %v", err)
			}
			var got schema.State
			if err := json.Unmarshal(p2, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, want) {
				wantJSON, _ := json.Marshal(want)
				t.Errorf("got\n%s\nwant\n%s", p2, wantJSON)
			}
			again, err := schema.EncodeState(&got, 2)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(p2) {
				t.Errorf("re-encoded v2 payload differs:\ngot  %s\nwant %s", again, p2)
			}
		})
	}
}

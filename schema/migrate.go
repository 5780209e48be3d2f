package schema

import (
	"encoding/json"
	"math"
	"time"
)

// A Migration rewrites a state payload from one schema version to the next
// (or the previous, for the downgrade that lets tests and the demo write an
// old format).
type Migration func(payload json.RawMessage) (json.RawMessage, error)

// migrations is the registry: key {from, to} of adjacent versions.
var migrations = map[[2]int]Migration{
	{1, 2}: migrateV1toV2,
	{2, 1}: migrateV2toV1,
}

// Migrate rewrites payload from version from to version to, one step at a
// time. It returns a STATE_CORRUPTION *Error when a step is missing or fails.
func Migrate(payload json.RawMessage, from, to int) (json.RawMessage, error) {
	for from != to {
		next := from + 1
		if to < from {
			next = from - 1
		}
		m, ok := migrations[[2]int{from, next}]
		if !ok {
			return nil, Errorf(CodeStateCorruption, "no migration from schema version %d to %d", from, next)
		}
		out, err := m(payload)
		if err != nil {
			return nil, Errorf(CodeStateCorruption, "migrating schema %d to %d: %v", from, next, err)
		}
		payload, from = out, next
	}
	return payload, nil
}

// Schema version 1, the format of the first release: tasks had "id", "name",
// a "state" word of their own, progress as a fraction, times as Unix
// milliseconds; sessions were called clients.
type stateV1 struct {
	Tasks   []taskV1   `json:"tasks"`
	Clients []clientV1 `json:"clients"`
	Replies []replyV1  `json:"replies"`
	Config  string     `json:"config"`
}

type taskV1 struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	State       string          `json:"state"` // pending running paused done error
	Fraction    float64         `json:"progress"`
	Checkpoint  json.RawMessage `json:"checkpoint,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	Job         *jobV1          `json:"job,omitempty"`
	Created     int64           `json:"created_ms"`
	Updated     int64           `json:"updated_ms"`
}

type jobV1 struct {
	Steps  int   `json:"steps"`
	StepMS int64 `json:"step_ms"`
	Done   int   `json:"done"`
}

type clientV1 struct {
	ID          string `json:"id"`
	Kind        string `json:"kind,omitempty"`
	Connected   int64  `json:"connected_ms"`
	LastSeen    int64  `json:"last_seen_ms"`
	Requests    int64  `json:"requests"`
	Reconnects  int    `json:"reconnects"`
	ReconnectMS int64  `json:"reconnect_ms"`
}

type replyV1 struct {
	RequestID string          `json:"request_id"`
	ClientID  string          `json:"client_id"`
	Reply     json.RawMessage `json:"reply"`
	At        int64           `json:"at_ms"`
}

var v1States = map[string]TaskStatus{
	"pending": TaskPending, "running": TaskActive, "paused": TaskSuspended, "done": TaskCompleted, "error": TaskFailed,
}

func ms(t time.Time) int64                  { return t.UnixMilli() }
func fromMS(v int64) time.Time              { return time.UnixMilli(v).UTC() }
func strictUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// secsToMS converts seconds to v1 milliseconds, rounded: truncating turned
// 1.001 s into 1000 ms (1.001*1000 = 1000.9999999999999).
func secsToMS(s float64) int64 { return int64(math.Round(s * 1000)) }

// percent converts a v1 fraction to a v2 percentage, rounded to 1e-6 so that
// float arithmetic does not leak (0.57 -> 57, not 56.99999999999999) and
// v2 -> v1 -> v2 gives back the same progress.
func percent(fraction float64) float64 { return math.Round(fraction*1e8) / 1e6 }

func migrateV1toV2(payload json.RawMessage) (json.RawMessage, error) {
	var in stateV1
	if err := strictUnmarshal(payload, &in); err != nil {
		return nil, err
	}
	out := State{ConfigVersion: in.Config, Tasks: make([]Task, 0, len(in.Tasks)),
		Sessions: make([]Session, 0, len(in.Clients)), Replies: make([]KeptReply, 0, len(in.Replies))}
	for _, t := range in.Tasks {
		st, ok := v1States[t.State]
		if !ok {
			return nil, Errorf(CodeStateCorruption, "task %s has unknown v1 state %q", t.ID, t.State)
		}
		nt := Task{TaskID: t.ID, Title: t.Name, Description: t.Description, Status: st,
			Progress: percent(t.Fraction), Checkpoint: t.Checkpoint, Result: t.Result, Error: t.Error,
			CreatedAt: fromMS(t.Created), UpdatedAt: fromMS(t.Updated)}
		if t.Job != nil {
			nt.Job = &Job{Kind: JobKindSteps, Steps: t.Job.Steps, StepSeconds: float64(t.Job.StepMS) / 1000}
			nt.StepsDone = t.Job.Done
		}
		out.Tasks = append(out.Tasks, nt)
	}
	for _, c := range in.Clients {
		out.Sessions = append(out.Sessions, Session{SessionID: c.ID, ClientID: c.ID, ClientKind: c.Kind,
			ConnectedAt: fromMS(c.Connected), LastActivity: fromMS(c.LastSeen), Requests: c.Requests,
			Reconnects: c.Reconnects, ReconnectSeconds: float64(c.ReconnectMS) / 1000})
	}
	for _, r := range in.Replies {
		out.Replies = append(out.Replies, KeptReply{RequestID: r.RequestID, ClientID: r.ClientID, Reply: r.Reply, At: fromMS(r.At)})
	}
	out.Canonical()
	return json.Marshal(&out)
}

func migrateV2toV1(payload json.RawMessage) (json.RawMessage, error) {
	var in State
	if err := strictUnmarshal(payload, &in); err != nil {
		return nil, err
	}
	// Version 1 had no reply references.
	if err := in.ExpandReplies(); err != nil {
		return nil, err
	}
	back := map[TaskStatus]string{}
	for k, v := range v1States {
		back[v] = k
	}
	out := stateV1{Config: in.ConfigVersion, Tasks: make([]taskV1, 0, len(in.Tasks)),
		Clients: make([]clientV1, 0, len(in.Sessions)), Replies: make([]replyV1, 0, len(in.Replies))}
	for _, t := range in.Tasks {
		ot := taskV1{ID: t.TaskID, Name: t.Title, Description: t.Description, State: back[t.Status],
			Fraction: t.Progress / 100, Checkpoint: t.Checkpoint, Result: t.Result, Error: t.Error,
			Created: ms(t.CreatedAt), Updated: ms(t.UpdatedAt)}
		if t.Job != nil {
			ot.Job = &jobV1{Steps: t.Job.Steps, StepMS: secsToMS(t.Job.StepSeconds), Done: t.StepsDone}
		}
		out.Tasks = append(out.Tasks, ot)
	}
	for _, s := range in.Sessions {
		out.Clients = append(out.Clients, clientV1{ID: s.ClientID, Kind: s.ClientKind, Connected: ms(s.ConnectedAt),
			LastSeen: ms(s.LastActivity), Requests: s.Requests, Reconnects: s.Reconnects,
			ReconnectMS: secsToMS(s.ReconnectSeconds)})
	}
	for _, r := range in.Replies {
		out.Replies = append(out.Replies, replyV1{RequestID: r.RequestID, ClientID: r.ClientID, Reply: r.Reply, At: ms(r.At)})
	}
	return json.Marshal(&out)
}

package schema

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Task is a unit of work a node holds.
type Task struct {
	TaskID      string          `json:"task_id"`
	Title       string          `json:"title"`
	Description string          `json:"description,omitempty"`
	Status      TaskStatus      `json:"status"`
	Progress    float64         `json:"progress"`
	Checkpoint  json.RawMessage `json:"checkpoint,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	Job         *Job            `json:"job,omitempty"`
	StepsDone   int             `json:"steps_done,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

// Equal reports whether two tasks hold the same content.
func (t *Task) Equal(o *Task) bool {
	a, _ := json.Marshal(t)
	b, _ := json.Marshal(o)
	return bytes.Equal(a, b)
}

// Job is work the node runs itself, step by step.
type Job struct {
	Kind        string  `json:"kind"`
	Steps       int     `json:"steps"`
	StepSeconds float64 `json:"step_seconds"`
}

// JobKindSteps is the only job kind: N steps of work, a checkpoint after each.
const JobKindSteps = "steps"

// Limits of task fields.
const (
	MaxTitleLen       = 256
	MaxDescriptionLen = 64 << 10
	MaxBlobLen        = 256 << 10 // checkpoint, result
	MaxJobSteps       = 1_000_000
	MaxStepSeconds    = 3600
	DefaultListLimit  = 100
	MaxListLimit      = 1000
)

// Validate checks a job definition, naming fields under prefix.
func (j *Job) validate(prefix string) error {
	if j.Kind != JobKindSteps {
		return Invalid(prefix+".kind", "job kind must be %q, got %q", JobKindSteps, j.Kind)
	}
	if j.Steps < 1 || j.Steps > MaxJobSteps {
		return Invalid(prefix+".steps", "job steps must be 1..%d, got %d", MaxJobSteps, j.Steps)
	}
	if math.IsNaN(j.StepSeconds) || j.StepSeconds < 0 || j.StepSeconds > MaxStepSeconds {
		return Invalid(prefix+".step_seconds", "job step_seconds must be 0..%d, got %v", MaxStepSeconds, j.StepSeconds)
	}
	return nil
}

// Task operations of the buffered request API.
const (
	OpTaskCreate   = "task.create"
	OpTaskGet      = "task.get"
	OpTaskList     = "task.list"
	OpTaskUpdate   = "task.update"
	OpTaskComplete = "task.complete"
	OpTaskFail     = "task.fail"
)

// TaskOps lists every task operation.
var TaskOps = []string{OpTaskCreate, OpTaskGet, OpTaskList, OpTaskUpdate, OpTaskComplete, OpTaskFail}

// TaskRequest is the body of a buffered client request.
type TaskRequest struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Validate implements Validator.
func (r *TaskRequest) Validate() error {
	if !slices.Contains(TaskOps, r.Op) {
		return Invalid("op", "unknown op %q", r.Op).WithDetail("allowed", TaskOps)
	}
	return nil
}

// Mutates reports whether op changes state (and so is journaled).
func Mutates(op string) bool { return op != OpTaskGet && op != OpTaskList }

// TaskCreateArgs are the args of task.create.
type TaskCreateArgs struct {
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
	Job         *Job   `json:"job,omitempty"`
}

// Validate implements Validator.
func (a *TaskCreateArgs) Validate() error {
	if a.Title == "" || len(a.Title) > MaxTitleLen {
		return Invalid("title", "title must be 1..%d bytes, got %d", MaxTitleLen, len(a.Title))
	}
	if len(a.Description) > MaxDescriptionLen {
		return Invalid("description", "description must be at most %d bytes", MaxDescriptionLen)
	}
	if a.Job != nil {
		return a.Job.validate("job")
	}
	return nil
}

// TaskIDArgs are the args of task.get.
type TaskIDArgs struct {
	TaskID string `json:"task_id"`
}

// Validate implements Validator.
func (a *TaskIDArgs) Validate() error { return checkTaskID(a.TaskID) }

func checkTaskID(id string) error {
	if !ValidToken(id) {
		return Invalid("task_id", "task_id must be 1..64 letters, digits, '-' or '_', got %q", id)
	}
	return nil
}

// TaskListArgs are the args of task.list.
type TaskListArgs struct {
	Status TaskStatus `json:"status,omitempty"`
	After  string     `json:"after,omitempty"`
	Limit  int        `json:"limit"`
}

// DefaultTaskListArgs is what {} means.
func DefaultTaskListArgs() TaskListArgs { return TaskListArgs{Limit: DefaultListLimit} }

// Validate implements Validator.
func (a *TaskListArgs) Validate() error {
	if a.Status != "" && !a.Status.Valid() {
		return Invalid("status", "unknown status %q", a.Status).WithDetail("allowed", TaskStatuses)
	}
	if a.Limit < 1 || a.Limit > MaxListLimit {
		return Invalid("limit", "limit must be 1..%d, got %d", MaxListLimit, a.Limit)
	}
	return nil
}

// TaskList is the result of task.list.
type TaskList struct {
	Tasks []Task `json:"tasks"`
	Next  string `json:"next,omitempty"`
}

// TaskUpdateArgs are the args of task.update.
type TaskUpdateArgs struct {
	TaskID     string          `json:"task_id"`
	Progress   *float64        `json:"progress,omitempty"`
	Checkpoint json.RawMessage `json:"checkpoint,omitempty"`
}

// Validate implements Validator.
func (a *TaskUpdateArgs) Validate() error {
	if err := checkTaskID(a.TaskID); err != nil {
		return err
	}
	if a.Progress != nil && (math.IsNaN(*a.Progress) || *a.Progress < 0 || *a.Progress > 100) {
		return Invalid("progress", "progress must be 0..100, got %v", *a.Progress)
	}
	if len(a.Checkpoint) > MaxBlobLen {
		return Invalid("checkpoint", "checkpoint must be at most %d bytes", MaxBlobLen)
	}
	if a.Progress == nil && a.Checkpoint == nil {
		return Invalid("progress", "task.update needs progress or checkpoint")
	}
	return nil
}

// TaskCompleteArgs are the args of task.complete.
type TaskCompleteArgs struct {
	TaskID string          `json:"task_id"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Validate implements Validator.
func (a *TaskCompleteArgs) Validate() error {
	if err := checkTaskID(a.TaskID); err != nil {
		return err
	}
	if len(a.Result) > MaxBlobLen {
		return Invalid("result", "result must be at most %d bytes", MaxBlobLen)
	}
	return nil
}

// TaskFailArgs are the args of task.fail.
type TaskFailArgs struct {
	TaskID string `json:"task_id"`
	Error  string `json:"error"`
}

// Validate implements Validator.
func (a *TaskFailArgs) Validate() error {
	if err := checkTaskID(a.TaskID); err != nil {
		return err
	}
	if a.Error == "" || len(a.Error) > MaxDescriptionLen {
		return Invalid("error", "error must be 1..%d bytes", MaxDescriptionLen)
	}
	return nil
}

// TaskReply is the reply to a buffered request.
type TaskReply struct {
	Type      string          `json:"type"`
	OK        bool            `json:"ok"`
	RequestID string          `json:"request_id,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *Error          `json:"error,omitempty"`
}

// Session is a client's session with a node.
type Session struct {
	SessionID    string    `json:"session_id"`
	ClientID     string    `json:"client_id"`
	ClientKind   string    `json:"client_kind,omitempty"`
	ConnectedAt  time.Time `json:"connected_at"`
	LastActivity time.Time `json:"last_activity"`
	Requests     int64     `json:"requests"`
	// Reconnects counts restarts after which this session was answered
	// again; ReconnectSeconds sums the time from the node being back to the
	// session's first answered request.
	Reconnects       int     `json:"reconnects"`
	ReconnectSeconds float64 `json:"reconnect_seconds"`
}

// KeptReply is a reply kept with its effect, keyed by request id. In a
// snapshot, a reply whose result is still its task's current content is
// kept as TaskRef (the task id) instead of a second copy of the task;
// ExpandReply rebuilds the same bytes.
type KeptReply struct {
	RequestID string          `json:"request_id"`
	ClientID  string          `json:"client_id"`
	Reply     json.RawMessage `json:"reply,omitempty"`
	TaskRef   string          `json:"task_ref,omitempty"`
	At        time.Time       `json:"at"`
}

// TaskReplyBody is the reply to a buffered request: the result, or the
// error when e is not nil.
func TaskReplyBody(requestID string, result any, e *Error) []byte {
	rep := TaskReply{Type: TypeTaskReply, OK: e == nil, RequestID: requestID, Error: e}
	if e == nil {
		rep.Result, _ = json.Marshal(result)
	}
	b, _ := json.Marshal(rep)
	return b
}

// ExpandReplies replaces every TaskRef of st by the full reply.
func (st *State) ExpandReplies() error {
	if len(st.Replies) == 0 {
		return nil
	}
	tasks := make(map[string]*Task, len(st.Tasks))
	for i := range st.Tasks {
		tasks[st.Tasks[i].TaskID] = &st.Tasks[i]
	}
	for i := range st.Replies {
		r := &st.Replies[i]
		if r.TaskRef == "" {
			continue
		}
		t, ok := tasks[r.TaskRef]
		if !ok {
			return Errorf(CodeStateCorruption, "kept reply %s refers to unknown task %s", r.RequestID, r.TaskRef)
		}
		r.Reply, r.TaskRef = TaskReplyBody(r.RequestID, t, nil), ""
	}
	return nil
}

// ReplyRequest is the body of orch.v1.node.<id>.reply.
type ReplyRequest struct {
	RequestID string `json:"request_id"`
}

// Validate implements Validator.
func (r *ReplyRequest) Validate() error {
	if r.RequestID == "" || len(r.RequestID) > 128 {
		return Invalid("request_id", "request_id must be 1..128 bytes")
	}
	return nil
}

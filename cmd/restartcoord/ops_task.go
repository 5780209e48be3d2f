package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// runTask runs `task create|get|list|update|complete|fail`.
func runTask(ctx context.Context, args []string) error {
	return dispatch(ctx, "task", []subverb{
		{"create", "create a task (with --steps, a job the node runs itself)", runTaskCreate},
		{"get", "show a task", runTaskGet},
		{"list", "list tasks", runTaskList},
		{"update", "set a task's progress and/or checkpoint", runTaskUpdate},
		{"complete", "complete a task", runTaskComplete},
		{"fail", "fail a task", runTaskFail},
	}, args)
}

// taskFlags are the flags every task sub-verb has.
type taskFlags struct {
	*opsFlags
	clientID, requestID *string
}

func newTaskFlags(name, usage string) *taskFlags {
	t := &taskFlags{opsFlags: newOpsFlags(name, usage)}
	t.clientID = t.fs.String("client", "", "client id the requests are sent as (default "+defaultClientID()+")")
	t.requestID = t.fs.String("request-id", "", "request id (default: a new one); repeating one returns the first answer and applies nothing twice")
	return t
}

var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// check validates the common flags.
func (t *taskFlags) check() error {
	if *t.clientID == "" {
		*t.clientID = defaultClientID()
	} else if !schema.ValidToken(*t.clientID) {
		return usageErr("--client %q: must be 1..64 letters, digits, '-' or '_'", *t.clientID)
	}
	if *t.requestID == "" {
		*t.requestID = uuid.NewString()
	} else if !requestIDRE.MatchString(*t.requestID) {
		return usageErr("--request-id %q: must be 1..128 letters, digits, '.', ':', '-' or '_'", *t.requestID)
	}
	return nil
}

// defaultClientID is "cli-<hostname>" made a subject token.
func defaultClientID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	id := "cli"
	if host != "" {
		id += "-" + host
	}
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

// taskArgs checks the sub-verb's positional arguments: NODE, and the task
// id when withID.
func taskArgs(pos []string, withID bool, usage string) (node, id string, err error) {
	want := 1
	if withID {
		want = 2
	}
	if len(pos) != want {
		what := "NODE"
		if withID {
			what = "NODE and TASK_ID"
		}
		return "", "", usageErr("expected %s, got %d arguments (usage: %s)", what, len(pos), usage)
	}
	if node, err = nodeArg(pos[:1], usage); err != nil {
		return "", "", err
	}
	if withID {
		id = pos[1]
		if !schema.ValidToken(id) {
			return "", "", usageErr("task id %q: must be 1..64 letters, digits, '-' or '_'", id)
		}
	}
	return node, id, nil
}

// taskFieldFlags names the flag of each field the validators name.
var taskFieldFlags = map[string]string{
	"title": "--title", "description": "--description", "job.steps": "--steps", "job.step_seconds": "--step-seconds",
	"status": "--status", "limit": "--limit", "after": "--after", "progress": "--progress",
	"checkpoint": "--checkpoint", "result": "--result", "error": "--error", "task_id": "TASK_ID",
}

// localCheck turns a failed local validation into a usage error naming the
// flag.
func localCheck(v schema.Validator) error {
	if err := v.Validate(); err != nil {
		e := schema.AsError(err)
		prefix := ""
		if f, ok := taskFieldFlags[e.Field()]; ok {
			prefix = f + ": "
		}
		return usageErr("%s%s%s", prefix, e.Message, detailSuffix(e))
	}
	return nil
}

// doTask sends one task op as the verb's client and prints the result: the
// raw result JSON with --json, else show's rendering.
func doTask(ctx context.Context, t *taskFlags, node, op string, args any, show func(raw json.RawMessage) error) error {
	conn, err := t.dial(ctx, "task")
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := nodeListening(ctx, conn, node); err != nil {
		return err
	}
	c, err := client.New(conn.Conn, *t.clientID, node)
	if err != nil {
		// Bad ids and a node that never joined are refused (2); a registry
		// that did not answer is a timeout (3).
		return err
	}
	defer c.Close()
	wait := t.conn.wait(defaultTaskWait)
	tctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	raw, err := c.DoID(tctx, *t.requestID, op, args)
	if err != nil {
		return taskError(ctx, node, op, *t.requestID, wait, err)
	}
	if *t.asJSON {
		return printRaw(raw)
	}
	return show(raw)
}

// nodeListening fails fast when nothing serves node (a typo, or a node that
// is not running at all: a restarting node still answers its control
// subjects), so no request is left in the buffer for nobody.
func nodeListening(ctx context.Context, conn *bus.Conn, node string) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body := schema.HealthRequest{}
	_, err := conn.Request(pctx, schema.NodeSubject(node, schema.OpHealth), body, nil)
	if errors.Is(err, bus.ErrNoResponders) {
		return hint(fmt.Errorf("node %s is not running, nothing was sent: %w", node, err))
	}
	return nil
}

// taskError explains a failed task request.
func taskError(ctx context.Context, node, op, requestID string, wait time.Duration, err error) error {
	var se *schema.Error
	retry := ""
	if schema.Mutates(op) {
		retry = fmt.Sprintf("; it stays buffered and is applied when %s serves again: repeat with --request-id %s to get its answer without applying it twice", node, requestID)
	}
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%s %s: %w%s", node, op, err, detailSuffix(se))
	case ctx.Err() != nil:
		return &exitError{code: exitNoNATS, err: fmt.Errorf("interrupted while waiting for %s %s (request %s)%s", node, op, requestID, retry)}
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no reply from %s to %s within %s (request %s)%s: %w", node, op, wait, requestID, retry, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return &exitError{code: exitNoNATS, err: fmt.Errorf("%s %s: no stream takes %s (run `restartcoord init`?): %w",
			node, op, schema.RequestSubject(node, "CLIENT"), err)}
	}
	return hint(err)
}

func showTask(raw json.RawMessage) error {
	var task schema.Task
	if err := json.Unmarshal(raw, &task); err != nil {
		return fmt.Errorf("cannot read the task: %w", err)
	}
	renderTask(opsOut, &task)
	return nil
}

const taskCreateUsage = "restartcoord task create NODE --title T [--description D] [--steps N [--step-seconds S]] [--client ID] [--request-id ID] [--json] [-s URL]"

func runTaskCreate(ctx context.Context, args []string) error {
	t := newTaskFlags("task create", taskCreateUsage)
	title := t.fs.String("title", "", "task title (required)")
	desc := t.fs.String("description", "", "task description")
	steps := t.fs.Int("steps", 0, "make it a job the node runs itself: N steps, a checkpoint after each")
	stepSecs := t.fs.Float64("step-seconds", 1, "seconds each job step takes (with --steps)")
	pos, err := parse(t.fs, args, taskCreateUsage)
	if err != nil {
		return err
	}
	node, _, err := taskArgs(pos, false, taskCreateUsage)
	if err != nil {
		return err
	}
	if err := t.check(); err != nil {
		return err
	}
	set := t.set()
	if !set["title"] {
		return usageErr("--title is required (usage: %s)", taskCreateUsage)
	}
	a := schema.TaskCreateArgs{Title: *title, Description: *desc}
	if set["steps"] {
		a.Job = &schema.Job{Kind: schema.JobKindSteps, Steps: *steps, StepSeconds: *stepSecs}
	} else if set["step-seconds"] {
		return usageErr("--step-seconds needs --steps")
	}
	if err := localCheck(&a); err != nil {
		return err
	}
	return doTask(ctx, t, node, schema.OpTaskCreate, a, showTask)
}

const taskGetUsage = "restartcoord task get NODE TASK_ID [--client ID] [--json] [-s URL]"

func runTaskGet(ctx context.Context, args []string) error {
	t := newTaskFlags("task get", taskGetUsage)
	pos, err := parse(t.fs, args, taskGetUsage)
	if err != nil {
		return err
	}
	node, id, err := taskArgs(pos, true, taskGetUsage)
	if err != nil {
		return err
	}
	if err := t.check(); err != nil {
		return err
	}
	return doTask(ctx, t, node, schema.OpTaskGet, schema.TaskIDArgs{TaskID: id}, showTask)
}

const taskListUsage = "restartcoord task list NODE [--status S] [--limit N] [--after TASK_ID] [--client ID] [--json] [-s URL]"

func runTaskList(ctx context.Context, args []string) error {
	t := newTaskFlags("task list", taskListUsage)
	status := t.fs.String("status", "", "only tasks with this status (pending, active, suspended, completed, failed)")
	limit := t.fs.Int("limit", schema.DefaultListLimit, fmt.Sprintf("at most this many tasks (1..%d)", schema.MaxListLimit))
	after := t.fs.String("after", "", "the page after this task id (the `next` of the previous page)")
	pos, err := parse(t.fs, args, taskListUsage)
	if err != nil {
		return err
	}
	node, _, err := taskArgs(pos, false, taskListUsage)
	if err != nil {
		return err
	}
	if err := t.check(); err != nil {
		return err
	}
	a := schema.TaskListArgs{Status: schema.TaskStatus(*status), After: *after, Limit: *limit}
	if err := localCheck(&a); err != nil {
		return err
	}
	return doTask(ctx, t, node, schema.OpTaskList, a, func(raw json.RawMessage) error {
		var l schema.TaskList
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("cannot read the task list: %w", err)
		}
		renderTaskList(opsOut, node, &l)
		return nil
	})
}

const taskUpdateUsage = "restartcoord task update NODE TASK_ID [--progress P] [--checkpoint JSON] [--client ID] [--request-id ID] [--json] [-s URL]"

func runTaskUpdate(ctx context.Context, args []string) error {
	t := newTaskFlags("task update", taskUpdateUsage)
	progress := t.fs.Float64("progress", 0, "progress, 0..100")
	checkpoint := t.fs.String("checkpoint", "", "checkpoint, any JSON value")
	pos, err := parse(t.fs, args, taskUpdateUsage)
	if err != nil {
		return err
	}
	node, id, err := taskArgs(pos, true, taskUpdateUsage)
	if err != nil {
		return err
	}
	if err := t.check(); err != nil {
		return err
	}
	set := t.set()
	a := schema.TaskUpdateArgs{TaskID: id}
	if set["progress"] {
		if math.IsNaN(*progress) || *progress < 0 || *progress > 100 {
			return usageErr("--progress must be 0..100, got %v", *progress)
		}
		a.Progress = progress
	}
	if set["checkpoint"] {
		if a.Checkpoint, err = jsonFlag("checkpoint", *checkpoint); err != nil {
			return err
		}
	}
	if a.Progress == nil && a.Checkpoint == nil {
		return usageErr("task update needs --progress or --checkpoint (usage: %s)", taskUpdateUsage)
	}
	if err := localCheck(&a); err != nil {
		return err
	}
	return doTask(ctx, t, node, schema.OpTaskUpdate, a, showTask)
}

const taskCompleteUsage = "restartcoord task complete NODE TASK_ID [--result JSON] [--client ID] [--request-id ID] [--json] [-s URL]"

func runTaskComplete(ctx context.Context, args []string) error {
	t := newTaskFlags("task complete", taskCompleteUsage)
	result := t.fs.String("result", "", "result, any JSON value")
	pos, err := parse(t.fs, args, taskCompleteUsage)
	if err != nil {
		return err
	}
	node, id, err := taskArgs(pos, true, taskCompleteUsage)
	if err != nil {
		return err
	}
	if err := t.check(); err != nil {
		return err
	}
	a := schema.TaskCompleteArgs{TaskID: id}
	if t.set()["result"] {
		if a.Result, err = jsonFlag("result", *result); err != nil {
			return err
		}
	}
	if err := localCheck(&a); err != nil {
		return err
	}
	return doTask(ctx, t, node, schema.OpTaskComplete, a, showTask)
}

const taskFailUsage = "restartcoord task fail NODE TASK_ID --error E [--client ID] [--request-id ID] [--json] [-s URL]"

func runTaskFail(ctx context.Context, args []string) error {
	t := newTaskFlags("task fail", taskFailUsage)
	reason := t.fs.String("error", "", "why the task failed (required)")
	pos, err := parse(t.fs, args, taskFailUsage)
	if err != nil {
		return err
	}
	node, id, err := taskArgs(pos, true, taskFailUsage)
	if err != nil {
		return err
	}
	if err := t.check(); err != nil {
		return err
	}
	if *reason == "" {
		return usageErr("--error is required (usage: %s)", taskFailUsage)
	}
	a := schema.TaskFailArgs{TaskID: id, Error: *reason}
	if err := localCheck(&a); err != nil {
		return err
	}
	return doTask(ctx, t, node, schema.OpTaskFail, a, showTask)
}

// jsonFlag checks that a flag holds one JSON value.
func jsonFlag(name, v string) (json.RawMessage, error) {
	if !json.Valid([]byte(v)) {
		return nil, usageErr("--%s must be JSON (quote a string: '\"done\"'), got %q", name, v)
	}
	return json.RawMessage(v), nil
}

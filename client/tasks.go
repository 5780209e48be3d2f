package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/restartcoord/restartcoord/schema"
)

// CreateTask creates a task (with a job the node runs itself when args.Job
// is not nil) and returns it as created. Errors: those of DoID
// (ErrBufferFull, ErrExpired, the reply's *schema.Error such as
// INVALID_PARAMETERS for bad args, ctx.Err(), ErrClosed), or a decode error
// if the result is not what the contract says.
func (c *Client) CreateTask(ctx context.Context, args schema.TaskCreateArgs) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskCreate, args))
}

// GetTask reads task id; an unknown id is a *schema.Error NOT_FOUND. Other
// errors: those of CreateTask.
func (c *Client) GetTask(ctx context.Context, id string) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskGet, schema.TaskIDArgs{TaskID: id}))
}

// UpdateTask sets a task's progress and/or checkpoint and returns the task
// as updated; an unknown task is a *schema.Error NOT_FOUND, and one already
// completed or failed INVALID_PARAMETERS. Other errors: those of CreateTask.
func (c *Client) UpdateTask(ctx context.Context, args schema.TaskUpdateArgs) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskUpdate, args))
}

// CompleteTask completes task id with result (may be nil) and returns the
// task as completed. Errors: those of UpdateTask.
func (c *Client) CompleteTask(ctx context.Context, id string, result json.RawMessage) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskComplete, schema.TaskCompleteArgs{TaskID: id, Result: result}))
}

// FailTask fails task id with reason and returns the task as failed.
// Errors: those of UpdateTask.
func (c *Client) FailTask(ctx context.Context, id, reason string) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskFail, schema.TaskFailArgs{TaskID: id, Error: reason}))
}

// ListTasks lists one page of tasks in task_id (creation) order; a zero
// Limit means schema.DefaultListLimit. The page's Next, when not empty, is
// the After of the next page. Errors: those of CreateTask.
func (c *Client) ListTasks(ctx context.Context, args schema.TaskListArgs) (*schema.TaskList, error) {
	if args.Limit == 0 {
		args.Limit = schema.DefaultListLimit
	}
	raw, err := c.Do(ctx, schema.OpTaskList, args)
	if err != nil {
		return nil, err
	}
	var l schema.TaskList
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("client: bad task list: %w", err)
	}
	return &l, nil
}

// AllTasks pages through every task, schema.MaxListLimit at a time. Errors:
// those of ListTasks, for the first page that fails.
func (c *Client) AllTasks(ctx context.Context) ([]schema.Task, error) {
	var out []schema.Task
	args := schema.TaskListArgs{Limit: schema.MaxListLimit}
	for {
		l, err := c.ListTasks(ctx, args)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Tasks...)
		if l.Next == "" {
			return out, nil
		}
		args.After = l.Next
	}
}

// TaskOf decodes the task a finished task.create, task.get, task.update,
// task.complete or task.fail call returned (as Call.Wait gives it): the
// call's error if it failed, else the task.
func TaskOf(raw json.RawMessage, err error) (*schema.Task, error) { return decodeTask(raw, err) }

func decodeTask(raw json.RawMessage, err error) (*schema.Task, error) {
	if err != nil {
		return nil, err
	}
	var t schema.Task
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("client: bad task: %w", err)
	}
	return &t, nil
}

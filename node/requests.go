package node

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// startRequests opens the node's request buffer and serves it on one
// goroutine: requests are handled one at a time in the stream's order, so
// each client's requests are applied in the order it made them.
func (w *worker) startRequests(ctx context.Context) (int, error) {
	reqs, err := w.bs.OpenRequests(ctx, w.env.NodeID)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.mu.Lock()
	w.reqStop, w.reqDone = cancel, done
	w.mu.Unlock()
	go func() {
		defer close(done)
		defer reqs.Stop()
		for {
			r, err := reqs.Next(rctx)
			if err != nil {
				if rctx.Err() != nil {
					return
				}
				w.log.Warn("request buffer", "err", err)
				select {
				case <-rctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			// The request in hand is finished even if a drain begins.
			w.handle(context.WithoutCancel(rctx), r)
		}
	}()
	return reqs.Pending(), nil
}

// stopRequests stops taking requests and waits for the one in hand.
func (w *worker) stopRequests() {
	w.mu.Lock()
	stop, done := w.reqStop, w.reqDone
	w.reqStop, w.reqDone = nil, nil
	w.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func (w *worker) reply(r *bus.Request, data []byte) {
	if err := w.bs.Reply(r.ReplyTo, data); err != nil {
		w.log.Warn("reply not sent (kept with the effect)", "request", r.RequestID, "err", err)
	}
}

func replyBody(reqID string, result any, e *schema.Error) []byte {
	return schema.TaskReplyBody(reqID, result, e)
}

// handle applies one buffered request exactly once: a request id already in
// the journal is answered from the kept reply; a new one is applied, its
// effect and reply journaled together, then answered, then acknowledged.
func (w *worker) handle(ctx context.Context, r *bus.Request) {
	if !strings.HasPrefix(r.ReplyTo, "_INBOX.") {
		w.log.Warn("request refused: reply subject must start with _INBOX.", "subject", r.Subject, "reply_to", r.ReplyTo)
		_ = r.Ack()
		return
	}
	if r.RequestID == "" || len(r.RequestID) > 128 || !schema.ValidToken(r.ClientID) {
		w.reply(r, replyBody(r.RequestID, nil, schema.Invalid("Nats-Msg-Id", "a request needs a Nats-Msg-Id header (the request id)")))
		_ = r.Ack()
		return
	}
	if kept, ok := w.st.keptReply(r.RequestID); ok {
		w.reply(r, kept)
		_ = r.Ack()
		return
	}
	now := stateNow()
	if age := now.Sub(r.Published); age > w.env.BufferExpiration {
		e := schema.Errorf(schema.CodeExpired, "request waited %.1fs in the buffer, longer than the expiration (%.0fs)",
			age.Seconds(), w.env.BufferExpiration.Seconds())
		w.commitReply(ctx, r, "expired", nil, replyBody(r.RequestID, nil, e), now)
		w.mu.Lock()
		w.expired++
		if w.reconnectPending[r.ClientID] {
			w.failedReconnects++
			delete(w.reconnectPending, r.ClientID)
		}
		w.mu.Unlock()
		_ = r.Ack()
		return
	}
	var tr schema.TaskRequest
	if err := schema.Decode(r.Data, &tr); err != nil {
		w.reply(r, replyBody(r.RequestID, nil, schema.AsError(err)))
		_ = r.Ack()
		return
	}
	if !schema.Mutates(tr.Op) {
		result, err := w.read(tr)
		w.touchSession(r, now)
		w.reply(r, replyBody(r.RequestID, result, schema.AsError(err)))
		_ = r.Ack()
		return
	}
	w.st.mu.Lock()
	task, result, opErr := w.mutate(tr, now)
	body := replyBody(r.RequestID, result, schema.AsError(opErr))
	sess := w.sessionAfter(r, now)
	e := &schema.JournalEntry{At: now, RequestID: r.RequestID, ClientID: r.ClientID, Op: tr.Op,
		Task: task, Session: sess, Reply: body}
	err := w.st.commitLocked(ctx, w.env.NodeID+":"+r.RequestID, e)
	w.st.mu.Unlock()
	if err != nil {
		// Not durable, so not answered and not acknowledged: the request
		// stays in the buffer for the next try.
		w.log.Error("journal write failed; request left in the buffer", "request", r.RequestID, "err", err)
		return
	}
	if task != nil && task.Job != nil && task.Status == schema.TaskActive && tr.Op == schema.OpTaskCreate {
		w.jobs.start(task.TaskID)
	}
	w.reply(r, body)
	_ = r.Ack()
}

// commitReply journals a reply without an effect (so a retry gets the same).
func (w *worker) commitReply(ctx context.Context, r *bus.Request, op string, task *schema.Task, body []byte, now time.Time) {
	w.st.mu.Lock()
	err := w.st.commitLocked(ctx, w.env.NodeID+":"+r.RequestID, &schema.JournalEntry{At: now, RequestID: r.RequestID,
		ClientID: r.ClientID, Op: op, Task: task, Reply: body})
	w.st.mu.Unlock()
	if err == nil {
		w.reply(r, body)
	}
}

// sessionAfter is the client's session updated by this request (st.mu held).
func (w *worker) sessionAfter(r *bus.Request, now time.Time) *schema.Session {
	s, ok := w.st.sessions[r.ClientID]
	var x schema.Session
	if ok {
		x = *s
	} else {
		x = schema.Session{SessionID: r.ClientID, ClientID: r.ClientID, ConnectedAt: now, ClientKind: "restartcoord-go"}
	}
	x.LastActivity = now
	x.Requests++
	w.mu.Lock()
	if w.reconnectPending[r.ClientID] {
		delete(w.reconnectPending, r.ClientID)
		from := w.readyAt
		if r.Published.After(from) {
			from = r.Published
		}
		x.Reconnects++
		x.ReconnectSeconds += now.Sub(from).Seconds()
	}
	w.mu.Unlock()
	return &x
}

// touchSession records activity of a read (in memory; snapshots keep it).
func (w *worker) touchSession(r *bus.Request, now time.Time) {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	x := w.sessionAfter(r, now)
	w.st.sessions[x.SessionID] = x
}

func (w *worker) read(tr schema.TaskRequest) (any, error) {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	switch tr.Op {
	case schema.OpTaskGet:
		var a schema.TaskIDArgs
		if err := schema.DecodeArgs(tr.Args, &a, "args"); err != nil {
			return nil, err
		}
		t, ok := w.st.tasks[a.TaskID]
		if !ok {
			return nil, schema.Errorf(schema.CodeNotFound, "no task %s", a.TaskID)
		}
		return t, nil
	case schema.OpTaskList:
		a := schema.DefaultTaskListArgs()
		if err := schema.DecodeArgs(tr.Args, &a, "args"); err != nil {
			return nil, err
		}
		return listTasks(w.st.tasks, a), nil
	}
	return nil, schema.Invalid("op", "unknown op %q", tr.Op)
}

// mutate computes the effect of a mutation (st.mu held); it changes nothing.
func (w *worker) mutate(tr schema.TaskRequest, now time.Time) (*schema.Task, any, error) {
	get := func(id string) (schema.Task, error) {
		t, ok := w.st.tasks[id]
		if !ok {
			return schema.Task{}, schema.Errorf(schema.CodeNotFound, "no task %s", id)
		}
		if t.Status.Terminal() {
			return schema.Task{}, schema.Invalid("task_id", "task %s is %s; it cannot change any more", id, t.Status)
		}
		return *t, nil
	}
	switch tr.Op {
	case schema.OpTaskCreate:
		var a schema.TaskCreateArgs
		if err := schema.DecodeArgs(tr.Args, &a, "args"); err != nil {
			return nil, nil, err
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, nil, err
		}
		t := schema.Task{TaskID: id.String(), Title: a.Title, Description: a.Description, Status: schema.TaskPending,
			Job: a.Job, CreatedAt: now, UpdatedAt: now}
		if a.Job != nil {
			t.Status = schema.TaskActive
		}
		return &t, &t, nil
	case schema.OpTaskUpdate:
		var a schema.TaskUpdateArgs
		if err := schema.DecodeArgs(tr.Args, &a, "args"); err != nil {
			return nil, nil, err
		}
		t, err := get(a.TaskID)
		if err != nil {
			return nil, nil, err
		}
		if a.Progress != nil {
			t.Progress = *a.Progress
		}
		if a.Checkpoint != nil {
			t.Checkpoint = a.Checkpoint
		}
		if t.Status == schema.TaskPending {
			t.Status = schema.TaskActive
		}
		t.UpdatedAt = now
		return &t, &t, nil
	case schema.OpTaskComplete:
		var a schema.TaskCompleteArgs
		if err := schema.DecodeArgs(tr.Args, &a, "args"); err != nil {
			return nil, nil, err
		}
		t, err := get(a.TaskID)
		if err != nil {
			return nil, nil, err
		}
		t.Status, t.Progress, t.Result, t.UpdatedAt = schema.TaskCompleted, 100, a.Result, now
		return &t, &t, nil
	case schema.OpTaskFail:
		var a schema.TaskFailArgs
		if err := schema.DecodeArgs(tr.Args, &a, "args"); err != nil {
			return nil, nil, err
		}
		t, err := get(a.TaskID)
		if err != nil {
			return nil, nil, err
		}
		t.Status, t.Error, t.UpdatedAt = schema.TaskFailed, a.Error, now
		return &t, &t, nil
	}
	return nil, nil, errors.New("unknown op " + tr.Op)
}

// listTasks pages through tasks in task_id order (uuid v7: creation order).
func listTasks(tasks map[string]*schema.Task, a schema.TaskListArgs) schema.TaskList {
	ids := make([]string, 0, len(tasks))
	for id, t := range tasks {
		if id > a.After && (a.Status == "" || t.Status == a.Status) {
			ids = append(ids, id)
		}
	}
	sortStrings(ids)
	out := schema.TaskList{Tasks: []schema.Task{}}
	for i, id := range ids {
		if i == a.Limit {
			out.Next = out.Tasks[len(out.Tasks)-1].TaskID
			break
		}
		out.Tasks = append(out.Tasks, *tasks[id])
	}
	return out
}

package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// startRequests opens the node's request buffer and serves it. A reader
// goroutine takes requests in the stream's order; the batcher takes every
// request already delivered (up to bus.MaxBatch), applies them in order, and
// writes their effects to the journal as one atomic batch (group commit).
// Only then are the replies sent and the requests acknowledged, in order: a
// client's requests are applied in the order it made them, and nothing
// leaves the worker before the journal has it.
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
	feed := make(chan *bus.Request, 4*bus.MaxBatch)
	go func() {
		defer close(feed)
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
			feed <- r
		}
	}()
	go func() {
		defer close(done)
		defer reqs.Stop()
		for r := range feed {
			batch := []*bus.Request{r}
		more:
			for len(batch) < bus.MaxBatch {
				select {
				case r2, ok := <-feed:
					if !ok {
						break more
					}
					batch = append(batch, r2)
				default:
					break more
				}
			}
			if rctx.Err() != nil {
				// Stopping: what is not handled stays in the buffer for the next worker.
				continue
			}
			w.handleBatch(batch)
		}
	}()
	return reqs.Pending(), nil
}

// stopRequests stops taking requests and waits for the batch in hand.
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

// outcome is what a request gets once its batch is durable.
type outcome struct {
	r        *bus.Request
	body     []byte // nil: no reply (refused)
	startJob string
}

// handleBatch applies a batch of requests exactly once each: a request id
// already in the journal is answered from the kept reply; a new one is
// applied, its effect and reply journaled together; then answered; then
// acknowledged.
func (w *worker) handleBatch(batch []*bus.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := w.st
	st.commitMu.Lock()
	defer st.commitMu.Unlock()
	now := stateNow()
	outs := make([]outcome, 0, len(batch))
	var ids []string
	var entries []*schema.JournalEntry
	st.mu.Lock()
	for _, r := range batch {
		o, e := w.decide(r, now)
		if e != nil {
			st.stage(e)
			ids = append(ids, w.env.NodeID+":"+r.RequestID)
			entries = append(entries, e)
		}
		outs = append(outs, o)
	}
	st.mu.Unlock()
	if err := st.commitBatch(ctx, ids, entries); err != nil {
		// Memory is ahead of the journal: nothing of this batch may leave the
		// worker. Exit; the next worker restores from the journal and gets
		// these requests again (they are not acknowledged).
		w.log.Error("journal batch failed; worker exits so a new one restores from the journal", "entries", len(entries), "err", err)
		fmt.Fprintf(os.Stderr, "journal write failed: %v\n", err)
		os.Exit(3)
	}
	for _, o := range outs {
		if o.body != nil {
			w.reply(o.r, o.body)
		}
		_ = o.r.Ack()
		if o.startJob != "" {
			w.jobs.start(o.startJob)
		}
	}
}

// decide works out one request's reply and the journal entry of its effect
// (nil when it has none); st.mu is held.
func (w *worker) decide(r *bus.Request, now time.Time) (outcome, *schema.JournalEntry) {
	o := outcome{r: r}
	if !strings.HasPrefix(r.ReplyTo, "_INBOX.") {
		w.log.Warn("request refused: reply subject must start with _INBOX.", "subject", r.Subject, "reply_to", r.ReplyTo)
		return o, nil
	}
	if r.RequestID == "" || len(r.RequestID) > 128 || !schema.ValidToken(r.ClientID) {
		o.body = replyBody(r.RequestID, nil, schema.Invalid("Nats-Msg-Id", "a request needs a Nats-Msg-Id header (the request id)"))
		return o, nil
	}
	if kept, ok := w.st.replies[r.RequestID]; ok {
		o.body = kept.Reply
		return o, nil
	}
	if age := now.Sub(r.Published); age > w.env.BufferExpiration {
		e := schema.Errorf(schema.CodeExpired, "request waited %.1fs in the buffer, longer than the expiration (%.0fs)",
			age.Seconds(), w.env.BufferExpiration.Seconds())
		o.body = replyBody(r.RequestID, nil, e)
		w.mu.Lock()
		w.expired++
		w.reconnectExpired(r.ClientID)
		w.mu.Unlock()
		return o, &schema.JournalEntry{At: now, RequestID: r.RequestID, ClientID: r.ClientID, Op: "expired", Reply: o.body}
	}
	var tr schema.TaskRequest
	if err := schema.Decode(r.Data, &tr); err != nil {
		o.body = replyBody(r.RequestID, nil, schema.AsError(err))
		return o, nil
	}
	if !schema.Mutates(tr.Op) {
		result, err := w.read(tr)
		x := w.sessionAfter(r, now)
		w.st.sessions[x.SessionID] = x
		o.body = replyBody(r.RequestID, result, schema.AsError(err))
		return o, nil
	}
	task, result, opErr := w.mutate(tr, now)
	o.body = replyBody(r.RequestID, result, schema.AsError(opErr))
	if task != nil && task.Job != nil && task.Status == schema.TaskActive && tr.Op == schema.OpTaskCreate {
		o.startJob = task.TaskID
	}
	return o, &schema.JournalEntry{At: now, RequestID: r.RequestID, ClientID: r.ClientID, Op: tr.Op,
		Task: task, Session: w.sessionAfter(r, now), Reply: o.body}
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
	// The session's own counts keep the reconnections in time only, as
	// the node's figures do.
	if secs, inTime := w.reconnectAnswered(r.ClientID, r.Published); inTime {
		x.Reconnects++
		x.ReconnectSeconds += secs
	}
	w.mu.Unlock()
	return &x
}

// read answers a read op (st.mu held).
func (w *worker) read(tr schema.TaskRequest) (any, error) {
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

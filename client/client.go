// Package client is the Go client of a node's task API. Requests go through
// the node's JetStream request buffer, so a call made while the node
// restarts waits durably and is answered once the node is back; a request id
// per call makes retries safe (the node answers a repeat from the reply it
// kept with the effect).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// Sentinels callers branch on; each wraps the envelope's *schema.Error.
var (
	ErrBufferFull  = errors.New("client: request buffer full")
	ErrExpired     = errors.New("client: request expired in the buffer")
	ErrNodeUnknown = errors.New("client: node unknown")
)

// Client sends one client's requests to one node.
type Client struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	clientID string
	nodeID   string
	poll     time.Duration
	ping     *nats.Subscription
}

// Option configures a Client.
type Option func(*Client) error

// WithReplyPoll sets how often a waiting call also asks the node for the
// kept reply (in case the inbox reply was lost in a reconnect); default 2 s.
func WithReplyPoll(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("client: reply poll must be positive, got %s", d)
		}
		c.poll = d
		return nil
	}
}

// New returns a client with id clientID for node nodeID; it answers pings
// on orch.v1.client.<client_id>.ping until Close.
func New(nc *nats.Conn, clientID, nodeID string, opts ...Option) (*Client, error) {
	if err := schema.CheckToken("client_id", clientID); err != nil {
		return nil, err
	}
	if err := schema.CheckToken("node_id", nodeID); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, js: js, clientID: clientID, nodeID: nodeID, poll: 2 * time.Second}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	c.ping, err = nc.Subscribe(schema.ClientPingSubject(clientID), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"type":"` + schema.TypePong + `","client":"restartcoord-go","rides_restarts":true}`))
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close stops answering pings.
func (c *Client) Close() error { return c.ping.Unsubscribe() }

// Do sends op with args under a new request id and waits for the reply.
func (c *Client) Do(ctx context.Context, op string, args any) (json.RawMessage, error) {
	return c.DoID(ctx, uuid.NewString(), op, args)
}

// DoID sends op with args under requestID. Sending the same id again (after
// a crash of the caller, say) returns the original answer and applies
// nothing twice.
func (c *Client) DoID(ctx context.Context, requestID, op string, args any) (json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"op": op, "args": args})
	if err != nil {
		return nil, err
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	msg := &nats.Msg{Subject: schema.RequestSubject(c.nodeID, c.clientID), Data: body, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, inbox)
	msg.Header.Set(nats.MsgIdHdr, requestID)
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		if strings.Contains(err.Error(), "maximum messages per subject exceeded") {
			e := schema.Errorf(schema.CodeBufferFull, "buffer of client %s on node %s is full", c.clientID, c.nodeID)
			return nil, fmt.Errorf("%w: %w", ErrBufferFull, e)
		}
		return nil, fmt.Errorf("client: publish: %w", err)
	}
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	if ack.Duplicate {
		// Sent before: its reply went (or goes) to the earlier inbox; fetch the kept one.
		if r, ok := c.kept(ctx, requestID); ok {
			return decodeReply(r)
		}
	}
	for {
		m, err := nextMsg(ctx, sub, c.poll)
		if err == nil {
			return decodeReply(m.Data)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if r, ok := c.kept(ctx, requestID); ok {
			return decodeReply(r)
		}
	}
}

func nextMsg(ctx context.Context, sub *nats.Subscription, wait time.Duration) (*nats.Msg, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return sub.NextMsgWithContext(wctx)
}

// kept asks the node for the reply kept with the effect.
func (c *Client) kept(ctx context.Context, requestID string) ([]byte, bool) {
	data, _ := json.Marshal(schema.ReplyRequest{RequestID: requestID})
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	m, err := c.nc.RequestWithContext(rctx, schema.NodeSubject(c.nodeID, schema.OpReply), data)
	if err != nil {
		return nil, false
	}
	if _, isErr := schema.ParseEnvelope(m.Data); isErr {
		return nil, false
	}
	return m.Data, true
}

func decodeReply(data []byte) (json.RawMessage, error) {
	var r schema.TaskReply
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("client: bad reply: %w", err)
	}
	if r.OK {
		return r.Result, nil
	}
	if r.Error == nil {
		return nil, errors.New("client: reply neither ok nor error")
	}
	switch r.Error.Code {
	case schema.CodeBufferFull:
		return nil, fmt.Errorf("%w: %w", ErrBufferFull, r.Error)
	case schema.CodeExpired:
		return nil, fmt.Errorf("%w: %w", ErrExpired, r.Error)
	}
	return nil, r.Error
}

// CreateTask creates a task (with a job to run when job is not nil).
func (c *Client) CreateTask(ctx context.Context, args schema.TaskCreateArgs) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskCreate, args))
}

// GetTask reads a task.
func (c *Client) GetTask(ctx context.Context, id string) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskGet, schema.TaskIDArgs{TaskID: id}))
}

// UpdateTask sets progress and/or checkpoint.
func (c *Client) UpdateTask(ctx context.Context, args schema.TaskUpdateArgs) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskUpdate, args))
}

// CompleteTask completes a task.
func (c *Client) CompleteTask(ctx context.Context, id string, result json.RawMessage) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskComplete, schema.TaskCompleteArgs{TaskID: id, Result: result}))
}

// FailTask fails a task.
func (c *Client) FailTask(ctx context.Context, id, reason string) (*schema.Task, error) {
	return decodeTask(c.Do(ctx, schema.OpTaskFail, schema.TaskFailArgs{TaskID: id, Error: reason}))
}

// ListTasks lists one page of tasks.
func (c *Client) ListTasks(ctx context.Context, args schema.TaskListArgs) (*schema.TaskList, error) {
	if args.Limit == 0 {
		args.Limit = schema.DefaultListLimit
	}
	raw, err := c.Do(ctx, schema.OpTaskList, args)
	if err != nil {
		return nil, err
	}
	var l schema.TaskList
	return &l, json.Unmarshal(raw, &l)
}

// AllTasks pages through every task.
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

func decodeTask(raw json.RawMessage, err error) (*schema.Task, error) {
	if err != nil {
		return nil, err
	}
	var t schema.Task
	return &t, json.Unmarshal(raw, &t)
}

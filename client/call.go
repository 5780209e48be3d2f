package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// maxRequestID is the longest request id the node takes.
const maxRequestID = 128

// jsErrStoreFailed is the JetStream error code (10077, "store failed") a
// stream answers when it refuses a message at a limit; its description
// says which limit.
const jsErrStoreFailed jetstream.ErrorCode = 10077

// jsErrDuplicateInProcess: "duplicate message id is in process" (a try of
// the same message id is still being stored).
const jsErrDuplicateInProcess jetstream.ErrorCode = 10158

// Call is one request in flight, as Go and GoID return it.
type Call struct {
	// RequestID is the request id (the Nats-Msg-Id): DoID with it, from
	// this or any later Client with the same client id, returns the same
	// answer and applies nothing twice.
	RequestID string
	// Op is the operation, e.g. schema.OpTaskCreate.
	Op string

	mutates bool
	msg     *nats.Msg
	token   string
	inbox   string
	replies chan []byte

	once   sync.Once
	done   chan struct{}
	result json.RawMessage
	err    error
}

// Done is closed when the call has ended (answered, failed, given up or
// closed).
func (call *Call) Done() <-chan struct{} { return call.done }

// Wait blocks until the call ends and returns the result of an ok reply, or
// the call's error: the ones DoID names.
func (call *Call) Wait() (json.RawMessage, error) {
	<-call.done
	return call.result, call.err
}

func (call *Call) finish(result json.RawMessage, err error) {
	call.once.Do(func() {
		call.result, call.err = result, err
		close(call.done)
	})
}

// Do sends op with args under a new request id (a uuid) and waits for the
// reply; see DoID for what it returns.
func (c *Client) Do(ctx context.Context, op string, args any) (json.RawMessage, error) {
	return c.DoID(ctx, uuid.NewString(), op, args)
}

// DoID sends op with args under requestID and waits for the reply. Sending
// the same id again (after the caller gave up, or crashed and came back as
// a new Client with the same client id) returns the original answer and
// applies nothing twice. The call rides restarts: while the node restarts
// the request waits in its buffer; while a NATS server restarts, the publish
// is tried again under the same id until it gets in.
//
// It returns the result of an ok reply, or:
//   - an error wrapping ErrBufferFull (and a *schema.Error BUFFER_FULL) at
//     once when the client's buffer on the node is full: the request was
//     not taken;
//   - an error wrapping ErrExpired (and a *schema.Error EXPIRED) when the
//     request waited longer than the buffer's expiration: nothing applied;
//   - the reply's *schema.Error for any other refusal (INVALID_PARAMETERS,
//     NOT_FOUND, ...), also for a bad op or request id, found before
//     sending;
//   - an error wrapping ctx.Err() when ctx ends first: if the request was
//     in the buffer it stays there and is applied; DoID with the same id
//     later returns its answer;
//   - ErrClosed when the Client is closed first;
//   - any other publish failure that a retry cannot mend (the connection
//     closed, a JetStream refusal), wrapped.
func (c *Client) DoID(ctx context.Context, requestID, op string, args any) (json.RawMessage, error) {
	return c.GoID(ctx, requestID, op, args).Wait()
}

// Go is the asynchronous Do: it returns once the request is in the node's
// buffer (or the call has failed: then Done is already closed, and a full
// buffer is reported this way at once), and the reply is awaited in the
// background until ctx ends; the Call's Wait returns what DoID would.
// Requests that one goroutine sends with Go are buffered, and so applied, in
// the order of the calls; up to the buffer's size (100) can be in flight at
// once per client. While NATS is unreachable, Go blocks (retrying) until the
// request gets in or ctx ends.
func (c *Client) Go(ctx context.Context, op string, args any) *Call {
	return c.GoID(ctx, uuid.NewString(), op, args)
}

// GoID is the asynchronous DoID: it returns once the request is in the
// node's buffer (or the call has failed: then Done is already closed); Wait
// returns what DoID would.
func (c *Client) GoID(ctx context.Context, requestID, op string, args any) *Call {
	call := &Call{RequestID: requestID, Op: op, mutates: schema.Mutates(op),
		replies: make(chan []byte, 1), done: make(chan struct{})}
	body, err := requestBody(requestID, op, args)
	if err != nil {
		call.finish(nil, err)
		return call
	}
	if err := c.register(call); err != nil {
		call.finish(nil, err)
		return call
	}
	// The call ends with ctx or with the Client.
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	end := func() {
		stop()
		cancel()
		c.forget(call)
	}
	call.msg = &nats.Msg{Subject: schema.RequestSubject(c.nodeID, c.clientID), Data: body, Header: nats.Header{}}
	call.msg.Header.Set(schema.HeaderReplyTo, call.inbox)
	call.msg.Header.Set(nats.MsgIdHdr, requestID)
	reconnects := c.reconnects()
	ack, err := c.publish(cctx, call.msg)
	if err != nil {
		call.finish(nil, c.callErr(ctx, call, err, "not sent (it may have reached the buffer: send it again with the same id)"))
		end()
		return call
	}
	c.stats.sent.Add(1)
	if ack.Duplicate {
		c.stats.duplicates.Add(1)
	}
	go func() {
		defer end()
		c.wait(cctx, ctx, call, ack.Duplicate, reconnects)
	}()
	return call
}

// requestBody validates what the node would refuse without keeping a reply
// (so the call would wait for nothing) and encodes the request.
func requestBody(requestID, op string, args any) ([]byte, error) {
	if requestID == "" || len(requestID) > maxRequestID {
		return nil, schema.Invalid("request_id", "request id must be 1..%d bytes, got %d", maxRequestID, len(requestID))
	}
	tr := schema.TaskRequest{Op: op}
	if err := tr.Validate(); err != nil {
		return nil, err
	}
	if args != nil {
		raw, err := json.Marshal(args)
		if err != nil {
			return nil, schema.Invalid("args", "args cannot be encoded: %v", err)
		}
		if string(raw) != "null" {
			tr.Args = raw
		}
	}
	return json.Marshal(tr)
}

// callErr explains why a call ended without a reply.
func (c *Client) callErr(ctx context.Context, call *Call, err error, what string) error {
	switch {
	case errors.Is(err, ErrBufferFull), errors.Is(err, ErrClosed):
		return err
	case ctx.Err() != nil:
		return fmt.Errorf("client: request %s (%s) %s: %w", call.RequestID, call.Op, what, context.Cause(ctx))
	case c.ctx.Err() != nil:
		return c.closedErr()
	}
	return fmt.Errorf("client: request %s (%s) not sent: %w", call.RequestID, call.Op, err)
}

// publish puts msg in the buffer, trying again under the same msg id
// (duplicates are dropped by the stream) while the error is one a retry can
// mend, until ctx ends.
func (c *Client) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(25*time.Millisecond),
		backoff.WithMaxInterval(time.Second), backoff.WithMaxElapsedTime(0))
	for {
		epoch := c.currentEpoch()
		actx, cancel := context.WithTimeout(ctx, c.pubTimeout)
		stop := context.AfterFunc(epoch, cancel)
		ack, err := c.js.PublishMsg(actx, msg)
		stop()
		cancel()
		if err == nil {
			return ack, nil
		}
		if bufferFull(err) {
			e := schema.Errorf(schema.CodeBufferFull, "the buffer of client %s on node %s is full", c.clientID, c.nodeID).
				WithDetail("client_id", c.clientID).WithDetail("node_id", c.nodeID)
			return nil, fmt.Errorf("%w: %w", ErrBufferFull, e)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if epoch.Err() != nil {
			// The connection was lost with this try in flight: its
			// acknowledgement will not come. Try again now (the try is
			// buffered until the connection is back).
			c.stats.retries.Add(1)
			continue
		}
		// A try that timed out is tried again, like any error a retry can mend.
		if !errors.Is(err, context.DeadlineExceeded) && !retryable(err) {
			return nil, err
		}
		c.stats.retries.Add(1)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(b.NextBackOff()):
		}
	}
}

// bufferFull: the stream refused the message at the per-subject limit.
func bufferFull(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsErrStoreFailed && strings.Contains(apiErr.Description, "maximum messages per subject")
	}
	return strings.Contains(err.Error(), "maximum messages per subject exceeded")
}

// retryable: the publish may succeed if tried again (a timeout, no
// responders while JetStream elects a leader or starts, a connection that is
// reconnecting), as opposed to a closed connection or a refusal.
func retryable(err error) bool {
	switch {
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadHeaderMsg),
		errors.Is(err, nats.ErrHeadersNotSupported), errors.Is(err, context.Canceled):
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// Unavailability (503: no leader, JetStream starting, store closed)
		// passes; a refusal (4xx, a limit) does not.
		if apiErr.ErrorCode == jsErrStoreFailed {
			d := apiErr.Description
			return !strings.Contains(d, "maximum") && !strings.Contains(d, "too large")
		}
		// 409 "duplicate message id is in process": an earlier try of this
		// very request is still being stored (on a cluster, around a server
		// restart); once it settles, the retry is answered as a duplicate.
		if apiErr.ErrorCode == jsErrDuplicateInProcess {
			return true
		}
		return apiErr.Code == 503 || apiErr.Code == 0
	}
	return true
}

// wait waits for call's reply on its inbox, with the kept reply as a
// fallback. A call is suspect when its reply may have gone elsewhere: its
// request was a duplicate (the reply went to the inbox of the first try,
// maybe of an earlier process) or the connection was lost meanwhile. A
// suspect call looks for the kept reply at once and then quickly (and again
// when the node announces it is back); any call looks every poll interval.
// cctx ends with ctx or the Client.
func (c *Client) wait(cctx, ctx context.Context, call *Call, dup bool, reconnects uint64) {
	suspect, lost := dup, dup
	fast := fastPollStart
	next := func() time.Duration {
		if !suspect {
			return c.poll
		}
		d := fast
		fast = min(2*fast, c.poll)
		return min(d, c.poll)
	}
	first := next()
	if dup {
		first = 0
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		nodeBack, connBack := c.signals()
		select {
		case data := <-call.replies:
			call.finish(decodeReply(data))
			return
		case <-cctx.Done():
			call.finish(nil, c.callErr(ctx, call, cctx.Err(), "has no reply yet (it stays in the buffer and will be applied: DoID with the same id fetches the answer)"))
			return
		case <-nodeBack:
			if suspect {
				fast = fastPollStart
				timer.Reset(next())
			}
			continue
		case <-connBack:
			// Give the connection a moment to subscribe again.
			suspect, lost, fast = true, true, fastPollStart
			timer.Reset(next())
			continue
		case <-timer.C:
		}
		if r := c.reconnects(); r != reconnects {
			reconnects, suspect, lost = r, true, true
		}
		if call.mutates {
			if c.recoverKept(cctx, call) {
				return
			}
		} else if lost {
			c.resend(cctx, call)
			lost = false
		}
		timer.Reset(next())
	}
}

// recoverKept ends call with the reply the node kept with its effect, if
// there is one yet.
func (c *Client) recoverKept(ctx context.Context, call *Call) bool {
	data, ok := c.kept(ctx, call.RequestID)
	if !ok {
		return false
	}
	c.stats.kept.Add(1)
	call.finish(decodeReply(data))
	return true
}

// resend sends a read again under a fresh id: a read keeps no reply to
// fetch, and it changes nothing, so a second one is harmless; its answer
// comes to the call's inbox.
func (c *Client) resend(ctx context.Context, call *Call) {
	m := &nats.Msg{Subject: call.msg.Subject, Data: call.msg.Data, Header: nats.Header{}}
	m.Header.Set(schema.HeaderReplyTo, call.inbox)
	m.Header.Set(nats.MsgIdHdr, uuid.NewString())
	if _, err := c.publish(ctx, m); err == nil {
		c.stats.resent.Add(1)
	}
}

// kept asks the node for the reply kept with the effect of requestID.
func (c *Client) kept(ctx context.Context, requestID string) ([]byte, bool) {
	data, _ := json.Marshal(schema.ReplyRequest{RequestID: requestID})
	rctx, cancel := context.WithTimeout(ctx, keptTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(rctx, schema.NodeSubject(c.nodeID, schema.OpReply), data)
	if err != nil || m.Header.Get("Nats-Service-Error") != "" {
		return nil, false // not (yet) kept, or the node is not serving
	}
	var r schema.TaskReply
	if json.Unmarshal(m.Data, &r) != nil || r.Type != schema.TypeTaskReply {
		return nil, false
	}
	return m.Data, true
}

// decodeReply turns a task reply into the result or the error DoID names.
func decodeReply(data []byte) (json.RawMessage, error) {
	if e, ok := schema.ParseEnvelope(data); ok {
		return nil, wrapCode(e)
	}
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
	return nil, wrapCode(r.Error)
}

func wrapCode(e *schema.Error) error {
	switch e.Code {
	case schema.CodeBufferFull:
		return fmt.Errorf("%w: %w", ErrBufferFull, e)
	case schema.CodeExpired:
		return fmt.Errorf("%w: %w", ErrExpired, e)
	}
	return e
}

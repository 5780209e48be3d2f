package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// DefaultRequestTimeout applies when the caller's context has no deadline.
const DefaultRequestTimeout = 10 * time.Second

// ErrNoResponders is returned when nothing listens on the subject (for a
// node endpoint: the node is not running).
var ErrNoResponders = errors.New("bus: no responders")

// ErrTimeout is returned when the request got no reply in time.
var ErrTimeout = errors.New("bus: request timed out")

// Request sends body (marshalled to JSON unless it is []byte) to subj with
// the headers hdr and returns the reply body. An error reply of the contract
// comes back as a *schema.Error (errors.As); a denied subject as
// ErrPermissionDenied at once; no listener as ErrNoResponders.
func (c *Conn) Request(ctx context.Context, subj string, body any, hdr nats.Header) ([]byte, error) {
	var data []byte
	switch b := body.(type) {
	case nil:
		data = []byte("{}")
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			return nil, fmt.Errorf("bus: encode request: %w", err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRequestTimeout)
		defer cancel()
	}
	denied, unwatch := c.perms.watch(subj)
	defer unwatch()
	type result struct {
		msg *nats.Msg
		err error
	}
	ch := make(chan result, 1)
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		m, err := c.RequestMsgWithContext(reqCtx, &nats.Msg{Subject: subj, Data: data, Header: hdr})
		ch <- result{m, err}
	}()
	var r result
	select {
	case r = <-ch:
	case err := <-denied:
		cancel()
		<-ch
		return nil, err
	}
	switch {
	case r.err == nil:
	case errors.Is(r.err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w on %s", ErrNoResponders, subj)
	case errors.Is(r.err, context.DeadlineExceeded), errors.Is(r.err, nats.ErrTimeout):
		select {
		case err := <-denied:
			return nil, err
		default:
		}
		return nil, fmt.Errorf("%w: %s", ErrTimeout, subj)
	default:
		return nil, fmt.Errorf("bus: request %s: %w", subj, r.err)
	}
	if e, ok := ReplyError(r.msg); ok {
		return r.msg.Data, e
	}
	return r.msg.Data, nil
}

// RequestJSON is Request with the reply decoded into out (unless the reply
// is an error).
func (c *Conn) RequestJSON(ctx context.Context, subj string, body any, hdr nats.Header, out any) error {
	data, err := c.Request(ctx, subj, body, hdr)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("bus: decode reply of %s: %w", subj, err)
	}
	return nil
}

// ReplyError extracts the contract error from a reply: the envelope in the
// body, else the micro service error headers.
func ReplyError(m *nats.Msg) (*schema.Error, bool) {
	if e, ok := schema.ParseEnvelope(m.Data); ok {
		return e, true
	}
	if desc := m.Header.Get("Nats-Service-Error"); desc != "" {
		return &schema.Error{Code: schema.CodeInternal, Message: desc}, true
	}
	return nil, false
}

// Retryable reports whether an operation that failed with err may succeed
// if tried again: a timeout or a lost server, not a refusal or a closed
// connection.
func Retryable(err error) bool {
	var se *schema.Error
	switch {
	case err == nil:
		return false
	case errors.As(err, &se), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, context.Canceled),
		errors.Is(err, ErrPermissionDenied):
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// Refusals by JetStream (wrong sequence, limits) are final; "no
		// leader" style unavailability (503) is not.
		return (apiErr.Code == 503 || apiErr.Code == 0) && apiErr.ErrorCode != 10077 // 10077: a full buffer
	}
	return true
}

package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// Request is one buffered client request as the worker sees it.
type Request struct {
	Subject   string
	ClientID  string
	RequestID string
	ReplyTo   string
	Data      []byte
	Published time.Time
	Delivered uint64 // delivery count
	msg       jetstream.Msg
}

// Ack removes the request from the buffer (work-queue retention).
func (r *Request) Ack() error { return r.msg.Ack() }

// Requests is an open stream of a node's buffered requests, in order.
type Requests struct {
	pending uint64
	renew   func(ctx context.Context) (jetstream.MessagesContext, error)

	mu      sync.Mutex
	it      jetstream.MessagesContext
	stopped bool
}

// Pending is how many requests waited in the buffer when it was opened.
func (r *Requests) Pending() int { return int(r.pending) }

// Next blocks for the next request, or returns ctx's error. When the
// server ends delivery for good (the consumer deleted under it, which a
// JetStream fault can do), Next makes the consumer again and returns the
// error: the next call goes on from the oldest request not acknowledged.
func (r *Requests) Next(ctx context.Context) (*Request, error) {
	r.mu.Lock()
	it := r.it
	r.mu.Unlock()
	m, err := it.Next(jetstream.NextContext(ctx))
	if err != nil {
		if ended(err) && ctx.Err() == nil {
			if rerr := r.resume(ctx, it); rerr != nil {
				return nil, fmt.Errorf("bus: request delivery ended (%w) and could not resume: %w", err, rerr)
			}
			return nil, fmt.Errorf("bus: request delivery ended (%w); resumed", err)
		}
		return nil, err
	}
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return nil, err
	}
	req := &Request{Subject: m.Subject(), Data: m.Data(), Published: md.Timestamp, Delivered: md.NumDelivered, msg: m}
	if i := strings.LastIndexByte(req.Subject, '.'); i >= 0 {
		req.ClientID = req.Subject[i+1:]
	}
	if h := m.Headers(); h != nil {
		req.ReplyTo = h.Get(schema.HeaderReplyTo)
		req.RequestID = h.Get(nats.MsgIdHdr)
	}
	return req, nil
}

// Stop stops delivery; requests not acknowledged stay in the buffer.
func (r *Requests) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.it.Stop()
}

// ended: the iterator delivers nothing more (nats.go closes it for good on
// "consumer deleted" and on a bad request).
func ended(err error) bool {
	return errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrBadRequest)
}

// resume replaces the ended iterator it with one on the consumer made anew
// (unless Stop was called, or another call replaced it already).
func (r *Requests) resume(ctx context.Context, it jetstream.MessagesContext) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.it != it {
		return nil
	}
	next, err := r.renew(rctx)
	if err != nil {
		return err
	}
	it.Stop()
	r.it = next
	return nil
}

func consumerName(nodeID string) string { return "node-" + nodeID }

// OpenRequests (re)creates the node's durable consumer and starts delivery
// from the oldest waiting request. Re-creating it is what makes a new worker
// get at once what a dead one had fetched and not acknowledged (JetStream
// would otherwise redeliver only after the ack wait).
func (s *Store) OpenRequests(ctx context.Context, nodeID string) (*Requests, error) {
	st, err := s.js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		return nil, err
	}
	name := consumerName(nodeID)
	if err := st.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("bus: reset request consumer: %w", err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable: name, Description: "buffered requests of node " + nodeID,
		FilterSubject: schema.RequestFilter(nodeID), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxAckPending: 1024, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: create request consumer: %w", err)
	}
	info := cons.CachedInfo()
	it, err := consumeRequests(cons)
	if err != nil {
		return nil, err
	}
	// Delivery ended by the server: the same consumer, made again if it is
	// gone (what it had delivered and not acknowledged comes again).
	renew := func(ctx context.Context) (jetstream.MessagesContext, error) {
		cons, err := st.CreateOrUpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("bus: make request consumer again: %w", err)
		}
		return consumeRequests(cons)
	}
	return &Requests{it: it, pending: info.NumPending, renew: renew}, nil
}

// consumeRequests starts delivery from the request consumer. A short pull
// expiry and heartbeat: after a NATS server restart the pull is renewed
// within a second or two, not after the 30 s default.
func consumeRequests(cons jetstream.Consumer) (jetstream.MessagesContext, error) {
	it, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullExpiry(2*time.Second), jetstream.PullHeartbeat(500*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("bus: consume requests: %w", err)
	}
	return it, nil
}

// BufferDepths counts the requests waiting per client of a node.
func (s *Store) BufferDepths(ctx context.Context, nodeID string) (map[string]int, error) {
	st, err := s.js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(schema.RequestFilter(nodeID)))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for subj, n := range info.State.Subjects {
		if i := strings.LastIndexByte(subj, '.'); i >= 0 && n > 0 {
			out[subj[i+1:]] = int(n)
		}
	}
	return out, nil
}

// Reply publishes a reply to a client's inbox.
func (s *Store) Reply(inbox string, data []byte) error { return s.conn.Publish(inbox, data) }

// RequestBufferLimit is the per-client buffer: the request stream's
// per-subject limit.
func (s *Store) RequestBufferLimit(ctx context.Context) (int, error) {
	st, err := s.js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		return 0, err
	}
	return int(st.CachedInfo().Config.MaxMsgsPerSubject), nil
}

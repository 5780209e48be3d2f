package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	it      jetstream.MessagesContext
	pending uint64
}

// Pending is how many requests waited in the buffer when it was opened.
func (r *Requests) Pending() int { return int(r.pending) }

// Next blocks for the next request, or returns ctx's error.
func (r *Requests) Next(ctx context.Context) (*Request, error) {
	m, err := r.it.Next(jetstream.NextContext(ctx))
	if err != nil {
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
func (r *Requests) Stop() { r.it.Stop() }

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
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: name, Description: "buffered requests of node " + nodeID,
		FilterSubject: schema.RequestFilter(nodeID), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxAckPending: 1024, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: create request consumer: %w", err)
	}
	info := cons.CachedInfo()
	// A short pull expiry and heartbeat: after a NATS server restart the
	// pull is renewed within a second or two, not after the 30 s default.
	it, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullExpiry(2*time.Second), jetstream.PullHeartbeat(500*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("bus: consume requests: %w", err)
	}
	return &Requests{it: it, pending: info.NumPending}, nil
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

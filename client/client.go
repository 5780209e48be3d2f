package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// Sentinels callers branch on with errors.Is. An error matching
// ErrBufferFull or ErrExpired also wraps the contract's *schema.Error (code
// BUFFER_FULL or EXPIRED), and one matching ErrNodeUnknown wraps a NOT_FOUND
// one, so errors.As with a *schema.Error target finds the code and message.
var (
	// ErrBufferFull: the client's buffer on the node holds as many waiting
	// requests as it may (100 by default); the request was not taken.
	ErrBufferFull = errors.New("client: request buffer full")
	// ErrExpired: the request waited in the buffer longer than the
	// expiration (300 s by default) and was answered EXPIRED, not applied.
	ErrExpired = errors.New("client: request expired in the buffer")
	// ErrNodeUnknown: the node has not joined (it is not in the registry and
	// does not answer health), so no request is sent to its buffer.
	ErrNodeUnknown = errors.New("client: node unknown")
	// ErrClosed: the Client was closed before the call ended, or its NATS
	// connection was (then the error also matches nats.ErrConnectionClosed).
	ErrClosed = errors.New("client: closed")
)

// Defaults of the options.
const (
	// DefaultReplyPoll is how often a waiting call asks for its kept reply.
	DefaultReplyPoll = 2 * time.Second
	// DefaultPublishTimeout bounds one try to put a request in the buffer.
	DefaultPublishTimeout = 3 * time.Second
)

const (
	// nodeCheckWait is how long New keeps looking for a node that is not
	// (yet, or momentarily) in the registry.
	nodeCheckWait = 2 * time.Second
	// keptTimeout bounds one request for a kept reply.
	keptTimeout = time.Second
	// fastPollStart is the first delay of the quick kept-reply polls of a
	// call whose reply may have gone elsewhere (a duplicate, a reconnect).
	fastPollStart = 50 * time.Millisecond
)

// Client sends one client's requests to one node. It is safe for concurrent
// use; every call gets its own inbox under the Client's one reply
// subscription.
type Client struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	clientID string
	nodeID   string

	poll       time.Duration
	pubTimeout time.Duration
	nodeCheck  bool
	onNotice   func(schema.Notice)

	prefix    string // the inbox prefix; each call is <prefix>.<n>
	replySub  *nats.Subscription
	pingSub   *nats.Subscription
	notifySub *nats.Subscription

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // calls waiting for their reply

	status chan nats.Status // the connection's status changes
	stats  counters

	mu     sync.Mutex
	calls  map[string]*Call // by inbox token
	seq    uint64
	closed bool
	// nodeBack is closed (and replaced) when the node announces it is back,
	// connBack when the connection is back: replies may have gone missing.
	nodeBack chan struct{}
	connBack chan struct{}
	// connClosed: the NATS connection was closed under the Client.
	connClosed bool
	// epoch ends (and is replaced) when the connection is lost: a publish in
	// flight then has lost its acknowledgement and is tried again at once.
	epoch       context.Context
	epochCancel context.CancelFunc
}

// Option configures a Client.
type Option func(*Client) error

// WithReplyPoll sets how often a waiting call also asks the node for the
// reply it kept with the effect, in case the reply sent to the inbox was
// lost in a reconnect (default DefaultReplyPoll). It returns an error from
// New when d is not positive.
func WithReplyPoll(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("client: reply poll must be positive, got %s", d)
		}
		c.poll = d
		return nil
	}
}

// WithPublishTimeout bounds one attempt to put a request in the buffer
// (default DefaultPublishTimeout); an attempt that times out is made again
// with the same request id until the call's context ends. It returns an
// error from New when d is not positive.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("client: publish timeout must be positive, got %s", d)
		}
		c.pubTimeout = d
		return nil
	}
}

// WithoutNodeCheck makes New skip the check that the node has joined, for
// programs (and tests) that start clients before their node. A request to
// a node that never comes waits in its buffer, and its call until its
// context ends.
func WithoutNodeCheck() Option {
	return func(c *Client) error {
		c.nodeCheck = false
		return nil
	}
}

// WithNotices calls fn with every restart notice of the node, decoded from
// orch.v1.notify.<node_id>: schema.NoticeRestartPending (with Reason and
// ExpectedSeconds) when a restart begins to close client connections, and
// schema.NoticeRestartComplete when the new worker takes requests again.
// fn runs on one goroutine, in the order the notices arrive; it should
// return quickly. Calls need no help from fn: they ride restarts anyway.
func WithNotices(fn func(schema.Notice)) Option {
	return func(c *Client) error {
		c.onNotice = fn
		return nil
	}
}

// New returns the client clientID of node nodeID on nc. It answers pings on
// orch.v1.client.<client_id>.ping until Close. Unless WithoutNodeCheck is
// given, it first checks that the node has joined: its key is in the
// ORCH_NODES registry or it answers health (a node restarting its whole
// process may be out of the registry for a moment, so New looks for it for
// about 2 s); otherwise it returns an error wrapping ErrNodeUnknown. A bad
// client or node id is a *schema.Error with code INVALID_PARAMETERS; a
// registry that cannot be read, or a subscription refused, is returned as
// is. nc should reconnect forever (nats.MaxReconnects(-1)) to ride NATS
// server restarts; it stays the caller's to close.
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
	c := &Client{nc: nc, js: js, clientID: clientID, nodeID: nodeID, poll: DefaultReplyPoll,
		pubTimeout: DefaultPublishTimeout, nodeCheck: true, calls: map[string]*Call{}, nodeBack: make(chan struct{}), connBack: make(chan struct{})}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.nodeCheck {
		if err := c.checkNode(); err != nil {
			return nil, err
		}
	}
	// The node refuses replies to anything but _INBOX.: keep that prefix
	// even when the connection has a custom one.
	c.prefix = nc.NewInbox()
	if !strings.HasPrefix(c.prefix, "_INBOX.") {
		c.prefix = nats.NewInbox()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.epoch, c.epochCancel = context.WithCancel(c.ctx)
	if err := c.subscribe(); err != nil {
		c.cancel()
		_ = c.unsubscribe()
		return nil, err
	}
	c.status = nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	c.wg.Add(1)
	go c.watchConn()
	return c, nil
}

// watchConn follows the connection: when it is lost, publishes in flight
// are tried again; when it is back, waiting calls look for kept replies.
func (c *Client) watchConn() {
	defer c.wg.Done()
	for st := range c.status {
		c.mu.Lock()
		switch st {
		case nats.DISCONNECTED, nats.RECONNECTING:
			if c.epoch.Err() == nil {
				c.epochCancel()
				c.epoch, c.epochCancel = context.WithCancel(c.ctx)
			}
		case nats.CONNECTED:
			close(c.connBack)
			c.connBack = make(chan struct{})
		case nats.CLOSED:
			// Nothing can be sent or received any more: calls end.
			c.connClosed = true
			c.cancel()
		}
		c.mu.Unlock()
	}
}

// closedErr is the error of a call ended by Close (or by the connection
// closing under the Client).
func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connClosed {
		return fmt.Errorf("%w: %w", ErrClosed, nats.ErrConnectionClosed)
	}
	return ErrClosed
}

func (c *Client) currentEpoch() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

func (c *Client) subscribe() error {
	var err error
	if c.replySub, err = c.nc.Subscribe(c.prefix+".*", c.onReply); err != nil {
		return fmt.Errorf("client: reply subscription: %w", err)
	}
	if c.notifySub, err = c.nc.Subscribe(schema.NotifySubject(c.nodeID), c.onNotify); err != nil {
		return fmt.Errorf("client: notice subscription: %w", err)
	}
	pong := []byte(`{"type":"` + schema.TypePong + `","client":"restartcoord-go","rides_restarts":true}`)
	if c.pingSub, err = c.nc.Subscribe(schema.ClientPingSubject(c.clientID), func(m *nats.Msg) {
		_ = m.Respond(pong)
	}); err != nil {
		return fmt.Errorf("client: ping subscription: %w", err)
	}
	// The subscriptions are in place at the server before the first call.
	return c.nc.Flush()
}

func (c *Client) unsubscribe() error {
	var errs []error
	for _, s := range []*nats.Subscription{c.replySub, c.notifySub, c.pingSub} {
		if s == nil {
			continue
		}
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops answering pings and notices, unsubscribes the inboxes and ends
// every call still waiting with ErrClosed (a request already in the buffer
// stays there and is applied; DoID with its id fetches the answer later).
// It waits for those calls to end. Closing twice is a no-op. The error is
// the unsubscribe failure, if any; the NATS connection stays open.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.nc.RemoveStatusListener(c.status)
	err := c.unsubscribe()
	if c.nc.IsConnected() {
		// The server forgets the subscriptions before Close returns.
		_ = c.nc.FlushTimeout(time.Second)
	}
	c.wg.Wait()
	return err
}

// ClientID is the client id this Client sends as (the last token of its
// request subject, and its session on the node).
func (c *Client) ClientID() string { return c.clientID }

// NodeID is the node this Client sends to.
func (c *Client) NodeID() string { return c.nodeID }

// onReply routes a reply to the call waiting on its inbox.
func (c *Client) onReply(m *nats.Msg) {
	token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	c.mu.Lock()
	call := c.calls[token]
	c.mu.Unlock()
	if call == nil {
		return // a late or repeated reply of a call that has ended
	}
	select {
	case call.replies <- m.Data:
	default:
	}
}

func (c *Client) onNotify(m *nats.Msg) {
	var n schema.Notice
	if err := json.Unmarshal(m.Data, &n); err != nil || n.Event == "" {
		return
	}
	if n.Event == schema.NoticeRestartComplete {
		// Calls whose reply may have gone elsewhere look for the kept one now.
		c.mu.Lock()
		close(c.nodeBack)
		c.nodeBack = make(chan struct{})
		c.mu.Unlock()
	}
	if c.onNotice != nil {
		c.onNotice(n)
	}
}

func (c *Client) signals() (nodeBack, connBack <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeBack, c.connBack
}

// register gives call an inbox of its own; forget must follow.
func (c *Client) register(call *Call) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.connClosed {
		if c.connClosed {
			return fmt.Errorf("%w: %w", ErrClosed, nats.ErrConnectionClosed)
		}
		return ErrClosed
	}
	c.seq++
	call.token = strconv.FormatUint(c.seq, 36)
	call.inbox = c.prefix + "." + call.token
	c.calls[call.token] = call
	c.wg.Add(1) // Close waits for the call
	return nil
}

// forget ends what register began.
func (c *Client) forget(call *Call) {
	c.mu.Lock()
	delete(c.calls, call.token)
	c.mu.Unlock()
	c.wg.Done()
}

func (c *Client) reconnects() uint64 { return c.nc.Stats().Reconnects }

// checkNode returns nil when the node has joined.
func (c *Client) checkNode() error {
	ctx, cancel := context.WithTimeout(context.Background(), nodeCheckWait+3*time.Second)
	defer cancel()
	deadline := time.Now().Add(nodeCheckWait)
	var regErr error
	var kv jetstream.KeyValue
	for {
		// Each registry read is bounded: while the bucket elects a leader
		// (a NATS server lost) it may not answer, and the node's own health
		// answer must still get its turn (found by the integration tests).
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		if kv == nil {
			kv, regErr = c.js.KeyValue(rctx, schema.BucketNodes)
		}
		if kv != nil {
			_, regErr = kv.Get(rctx, c.nodeID)
			if regErr == nil {
				rcancel()
				return nil
			}
			if errors.Is(regErr, jetstream.ErrKeyNotFound) || errors.Is(regErr, jetstream.ErrKeyDeleted) {
				regErr = nil
			}
		}
		rcancel()
		if c.answersHealth(ctx) {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if regErr != nil {
		return fmt.Errorf("client: cannot check that node %s has joined: registry %s: %w", c.nodeID, schema.BucketNodes, regErr)
	}
	e := schema.Errorf(schema.CodeNotFound, "node %s has not joined: it is not in the %s registry and does not answer on %s",
		c.nodeID, schema.BucketNodes, schema.NodeSubject(c.nodeID, schema.OpHealth)).WithDetail("node_id", c.nodeID)
	return fmt.Errorf("%w: %w", ErrNodeUnknown, e)
}

func (c *Client) answersHealth(ctx context.Context) bool {
	hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	m, err := c.nc.RequestWithContext(hctx, schema.NodeSubject(c.nodeID, schema.OpHealth),
		[]byte(`{"include_reboot_readiness":false,"include_connection_status":false,"include_database_status":false}`))
	return err == nil && m != nil
}

// Stats counts what a Client did to ride restarts, since New.
type Stats struct {
	// Sent counts requests put in the buffer (one per call that got in).
	Sent uint64
	// Retries counts publish tries made again under the same request id
	// (a timeout, no responders, a lost connection).
	Retries uint64
	// Duplicates counts requests the stream already had (an earlier try,
	// or an earlier process, got in first).
	Duplicates uint64
	// KeptReplies counts calls answered from the reply the node kept,
	// because the one sent to the inbox did not arrive.
	KeptReplies uint64
	// ReadsResent counts reads sent again after their reply may have been
	// lost (reads keep no reply to fetch).
	ReadsResent uint64
}

type counters struct{ sent, retries, duplicates, kept, resent atomic.Uint64 }

// Stats returns the Client's counters.
func (c *Client) Stats() Stats {
	return Stats{Sent: c.stats.sent.Load(), Retries: c.stats.retries.Load(), Duplicates: c.stats.duplicates.Load(),
		KeptReplies: c.stats.kept.Load(), ReadsResent: c.stats.resent.Load()}
}

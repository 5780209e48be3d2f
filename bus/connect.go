package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// MinServerVersion is the oldest nats-server restartcoord runs on: per-key
// TTLs (leases) arrived in 2.11.
const MinServerVersion = "2.11.0"

// DefaultURL is where operator verbs look for NATS when neither --server nor
// $NATS_URL says otherwise (as natscli does).
const DefaultURL = "nats://127.0.0.1:4222"

// ConnOptions says how to reach NATS, with natscli's flags.
type ConnOptions struct {
	URL      string // comma-separated server URLs
	Creds    string // credentials file
	User     string
	Password string
	Name     string // connection name shown by the server
	// ConnectTimeout bounds the first connection (5 s).
	ConnectTimeout time.Duration
	// PingInterval and MaxPingsOut decide how fast a dead server is
	// noticed: PingInterval*MaxPingsOut (1 s x 3).
	PingInterval time.Duration
	MaxPingsOut  int
	// ReconnectWait between attempts (250 ms, with jitter). Reconnects never stop.
	ReconnectWait time.Duration
}

// ResolveURL applies natscli's order: the flag, else $NATS_URL, else DefaultURL.
func ResolveURL(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("NATS_URL"); env != "" {
		return env
	}
	return DefaultURL
}

// Conn is a NATS connection with the permission watcher restartcoord's
// requests rely on to fail fast.
type Conn struct {
	*nats.Conn
	perms *permWatcher
}

// WithDefaults is o with its zero fields set to the defaults Connect uses.
func (o ConnOptions) WithDefaults() ConnOptions {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.PingInterval == 0 {
		o.PingInterval = time.Second
	}
	if o.MaxPingsOut == 0 {
		o.MaxPingsOut = 3
	}
	if o.ReconnectWait == 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	return o
}

// Connect dials NATS with reconnect settings that ride a server restart
// (reconnect forever, buffer publishes while disconnected, a dead server
// noticed within PingInterval*MaxPingsOut) and checks the server version.
func Connect(ctx context.Context, o ConnOptions) (*Conn, error) {
	o = o.WithDefaults()
	pw := &permWatcher{waiters: map[string][]chan error{}}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(o.MaxPingsOut),
		nats.Timeout(o.ConnectTimeout),
		nats.ReconnectBufSize(32 << 20),
		nats.ErrorHandler(pw.handle),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.User != "" || o.Password != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(o.URL, opts...)
		ch <- result{nc, err}
	}()
	var nc *nats.Conn
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, &ConnectError{URL: o.URL, Err: r.err}
		}
		nc = r.nc
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, &ConnectError{URL: o.URL, Err: ctx.Err()}
	}
	if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		nc.Close()
		return nil, err
	}
	return &Conn{Conn: nc, perms: pw}, nil
}

// ConnectError says NATS could not be reached (the CLI's exit code 3).
type ConnectError struct {
	URL string
	Err error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("cannot connect to NATS at %s: %v", e.URL, e.Err)
}
func (e *ConnectError) Unwrap() error { return e.Err }

// ErrServerTooOld is returned when the server predates MinServerVersion.
var ErrServerTooOld = errors.New("bus: nats-server too old")

// CheckServerVersion refuses a server older than MinServerVersion.
func CheckServerVersion(v string) error {
	if v == "" {
		return fmt.Errorf("%w: server did not report a version", ErrServerTooOld)
	}
	if compareVersions(v, MinServerVersion) < 0 {
		return fmt.Errorf("%w: server is %s; restartcoord needs %s or newer (per-key TTLs for leases)", ErrServerTooOld, v, MinServerVersion)
	}
	return nil
}

// compareVersions compares dotted numeric versions, ignoring a -suffix.
func compareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := range 3 {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionParts(v string) [3]int {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	var out [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		n, _ := strconv.Atoi(p)
		out[i] = n
	}
	return out
}

// ErrPermissionDenied is returned, at once, when NATS refuses this
// connection a subject (a denied request would otherwise time out).
var ErrPermissionDenied = errors.New("bus: permission denied by NATS")

// permWatcher turns the server's asynchronous permission violations into
// errors delivered to the request waiting on that subject.
type permWatcher struct {
	mu      sync.Mutex
	waiters map[string][]chan error
	// inboxDenied is set when the server refuses this connection its reply
	// inbox subscription: every request would hang, so all fail at once.
	inboxDenied error
}

func (p *permWatcher) handle(_ *nats.Conn, _ *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	msg := err.Error()
	i := strings.Index(msg, `to "`)
	if i < 0 {
		return
	}
	subj := msg[i+4:]
	if j := strings.IndexByte(subj, '"'); j >= 0 {
		subj = subj[:j]
	}
	p.mu.Lock()
	var ws []chan error
	if strings.Contains(msg, "for Subscription to") && strings.HasPrefix(subj, nats.InboxPrefix) {
		p.inboxDenied = fmt.Errorf("%w: replies cannot reach this connection: %s", ErrPermissionDenied, msg)
		for k, w := range p.waiters {
			ws = append(ws, w...)
			delete(p.waiters, k)
		}
	} else {
		ws = p.waiters[subj]
		delete(p.waiters, subj)
	}
	denied := p.inboxDenied
	p.mu.Unlock()
	for _, w := range ws {
		if denied != nil {
			select {
			case w <- denied:
			default:
			}
			continue
		}
		select {
		case w <- fmt.Errorf("%w: %s", ErrPermissionDenied, msg):
		default:
		}
	}
}

func (p *permWatcher) watch(subj string) (<-chan error, func()) {
	ch := make(chan error, 1)
	p.mu.Lock()
	if p.inboxDenied != nil {
		ch <- p.inboxDenied
	}
	p.waiters[subj] = append(p.waiters[subj], ch)
	p.mu.Unlock()
	return ch, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		ws := p.waiters[subj]
		for i, w := range ws {
			if w == ch {
				p.waiters[subj] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(p.waiters[subj]) == 0 {
			delete(p.waiters, subj)
		}
	}
}

// Package chaos holds fault-injection tools for the chaos-testing suite.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// proxyDialTimeout bounds how long a new connection waits for the target.
	proxyDialTimeout = 5 * time.Second
	// proxyChunkSize is the largest read forwarded as one chunk.
	proxyChunkSize = 32 << 10
	// proxyQueueLen is how many chunks a direction may hold in flight while they
	// wait out the delay; when it is full the reader stops reading, so memory
	// stays bounded and TCP flow control pushes back on the sender.
	proxyQueueLen = 64
	// proxyAcceptBackoff is the pause after a failed Accept before trying again.
	proxyAcceptBackoff = 10 * time.Millisecond
)

// proxyMode is what a proxy does with traffic.
type proxyMode int

const (
	proxyPass proxyMode = iota
	proxyBlackhole
	proxyDrop
)

func (m proxyMode) String() string {
	switch m {
	case proxyBlackhole:
		return "blackhole"
	case proxyDrop:
		return "drop"
	default:
		return "pass"
	}
}

// Proxy forwards TCP connections from a local listener to a target address,
// and can delay, drop or black-hole them, to cut a process off the network
// the way a partition would.
//
// All methods are safe for concurrent use.
type Proxy struct {
	name   string
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close; aborts dials in progress
	cancel context.CancelFunc
	delay  atomic.Int64 // time.Duration added to every forwarded chunk
	wg     sync.WaitGroup

	mu     sync.Mutex
	mode   proxyMode
	closed bool
	links  map[*proxyLink]struct{}
}

// proxyLink is one accepted client connection and, unless it was accepted
// while black-holed, its connection to the target.
type proxyLink struct {
	client     net.Conn
	server     net.Conn // nil for a connection held silently
	blackholed atomic.Bool
	open       atomic.Int32 // directions still forwarding
	done       chan struct{}
	once       sync.Once
}

// proxyChunk is one read from a connection, due for writing at due.
type proxyChunk struct {
	data []byte
	due  time.Time
}

// NewProxy listens on listen (use "127.0.0.1:0" to pick a free port) and
// starts forwarding accepted connections to target. The target need not be
// up yet: it is dialed for each new connection.
func NewProxy(name, listen, target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("chaos: proxy %q: bad target %q: %w", name, target, err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("chaos: proxy %q: listen on %s: %w", name, listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		name:   name,
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		links:  make(map[*proxyLink]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Name returns the name the proxy was created with.
func (p *Proxy) Name() string { return p.name }

// Addr returns the host:port the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the host:port the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetDelay adds d of latency to every chunk forwarded, in both directions,
// from now on; 0 (or less) removes it. Byte order is kept per direction, and
// chunks already in flight keep the delay they were read with.
func (p *Proxy) SetDelay(d time.Duration) {
	p.delay.Store(int64(max(d, 0)))
}

// Blackhole stops forwarding anything, either way, on existing and new
// connections, while keeping them open: bytes read are discarded, as a
// partition would lose them, and peers notice only when their pings time
// out. New connections are accepted and held without dialing the target.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = proxyBlackhole
	for l := range p.links {
		l.blackholed.Store(true)
	}
}

// Drop resets every open connection (both sides, with RST where the system
// allows it) and, until Heal, closes new connections as soon as they are
// accepted.
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = proxyDrop
	for l := range p.links {
		p.removeLocked(l, true)
	}
}

// Heal goes back to forwarding new connections. Connections that were
// black-holed stay dead: they are reset now, as a real partition's
// connections would have timed out, so that peers reconnect. The delay set
// with SetDelay is kept.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = proxyPass
	for l := range p.links {
		if l.blackholed.Load() {
			p.removeLocked(l, true)
		}
	}
}

// Mode describes what the proxy does: "pass", "blackhole" or "drop",
// followed by the delay if one is set, e.g. "pass+delay=50ms".
func (p *Proxy) Mode() string {
	p.mu.Lock()
	s := p.mode.String()
	p.mu.Unlock()
	if d := time.Duration(p.delay.Load()); d > 0 {
		s += "+delay=" + d.String()
	}
	return s
}

// Conns returns how many accepted connections the proxy holds open, whether
// paired with a target connection or held silently while black-holed.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops the listener, closes every connection and waits for all the
// proxy's goroutines to finish. Calling it again does nothing.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for l := range p.links {
		p.removeLocked(l, false)
	}
	p.mu.Unlock()

	p.cancel()
	err := p.ln.Close()
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("chaos: proxy %q: close listener: %w", p.name, err)
	}
	return nil
}

// acceptLoop accepts connections until the listener is closed.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if !p.pause(proxyAcceptBackoff) { // e.g. out of file descriptors
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.handle(conn)
	}
}

// pause waits for d, or returns false at once if the proxy is closed.
func (p *Proxy) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// handle sets up one accepted connection according to the current mode.
func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	l := &proxyLink{client: client, done: make(chan struct{})}
	switch p.currentMode() {
	case proxyDrop:
		l.close(true)
		return
	case proxyBlackhole:
		if p.register(l) {
			p.discard(l)
		}
		return
	}
	d := net.Dialer{Timeout: proxyDialTimeout}
	server, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		l.close(true) // the target is unreachable: refuse, as it would
		return
	}
	l.server = server
	if p.register(l) {
		p.forward(l)
	}
}

func (p *Proxy) currentMode() proxyMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// register adds l to the open links, marked for the current mode, unless the
// proxy is closed, dropping, or healed while l was being held silently; then
// it closes l and returns false.
func (p *Proxy) register(l *proxyLink) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		l.close(false)
		return false
	case p.mode == proxyDrop:
		l.close(true)
		return false
	case p.mode == proxyBlackhole:
		l.blackholed.Store(true)
	case l.server == nil: // held while black-holed, and healed since
		l.close(true)
		return false
	}
	p.links[l] = struct{}{}
	return true
}

// removeLocked forgets l and closes it; p.mu must be held.
func (p *Proxy) removeLocked(l *proxyLink, reset bool) {
	delete(p.links, l)
	l.close(reset)
}

// finish forgets l and closes both its connections.
func (p *Proxy) finish(l *proxyLink) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(l, false)
}

// discard reads and drops what a silently held client sends, until the
// connection is closed by either end.
func (p *Proxy) discard(l *proxyLink) {
	_, _ = io.Copy(io.Discard, l.client)
	p.finish(l)
}

// forward starts both directions of l, each a reader and a writer joined by
// a bounded queue, so that the delay adds latency without limiting
// throughput and bytes keep their order.
func (p *Proxy) forward(l *proxyLink) {
	l.open.Store(2)
	p.pipe(l, l.client, l.server)
	p.pipe(l, l.server, l.client)
}

// pipe forwards one direction of l, from src to dst.
func (p *Proxy) pipe(l *proxyLink, src, dst net.Conn) {
	q := make(chan proxyChunk, proxyQueueLen)
	p.wg.Add(2)
	go p.read(l, src, q)
	go p.write(l, dst, q)
}

// read reads src into q, stamping each chunk with when it is due, and
// discards what it reads while l is black-holed. It closes q when src ends.
func (p *Proxy) read(l *proxyLink, src net.Conn, q chan<- proxyChunk) {
	defer p.wg.Done()
	defer close(q)
	buf := make([]byte, proxyChunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.blackholed.Load() {
			c := proxyChunk{
				data: append([]byte(nil), buf[:n]...),
				due:  time.Now().Add(time.Duration(p.delay.Load())),
			}
			select {
			case q <- c:
			case <-l.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				p.finish(l) // reset or closed: tear down both sides
			}
			return
		}
	}
}

// write writes the chunks from q to dst once each is due. When q is closed
// after a clean EOF it half-closes dst, passing the EOF on, unless l is
// black-holed: a partition passes nothing, so it then waits for l to close.
func (p *Proxy) write(l *proxyLink, dst net.Conn, q <-chan proxyChunk) {
	defer p.wg.Done()
	defer p.directionDone(l)
	for c := range q {
		if !l.waitUntil(c.due) {
			return
		}
		if l.blackholed.Load() {
			continue // in flight when the partition began: lost
		}
		if _, err := dst.Write(c.data); err != nil {
			p.finish(l)
			return
		}
	}
	if l.blackholed.Load() {
		<-l.done
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// directionDone closes l once both its directions are done.
func (p *Proxy) directionDone(l *proxyLink) {
	if l.open.Add(-1) == 0 {
		p.finish(l)
	}
}

// waitUntil sleeps until t, or returns false at once if l is closed.
func (l *proxyLink) waitUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-l.done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-l.done:
		return false
	}
}

// close closes both connections of l, resetting them if reset is set, and
// wakes everything waiting on l. It is idempotent.
func (l *proxyLink) close(reset bool) {
	l.once.Do(func() {
		closeProxied(l.client, reset)
		closeProxied(l.server, reset)
		close(l.done)
	})
}

// closeProxied closes c, if any; with reset, it asks for an RST rather than
// a FIN.
func closeProxied(c net.Conn, reset bool) {
	if c == nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

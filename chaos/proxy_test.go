package chaos_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/restartcoord/restartcoord/chaos"
)

// silenceWindow is how long "nothing arrives" is waited for.
const silenceWindow = 300 * time.Millisecond

// ioTimeout bounds reads that are expected to return.
const ioTimeout = 5 * time.Second

// checkProxyLeaks fails t if goroutines started during t outlive its cleanups.
// Call it first, so that its cleanup runs last.
func checkProxyLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// startEchoServer runs a TCP echo server on 127.0.0.1 until the test ends.
func startEchoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("echo listen: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// newTestProxy starts a proxy to target, closed when the test ends.
func newTestProxy(t *testing.T, target string) *chaos.Proxy {
	t.Helper()
	p, err := chaos.NewProxy("test", "127.0.0.1:0", target)
	if err != nil {
		t.Fatalf("NewProxy: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// dial connects to the proxy, closing the connection when the test ends.
func dialProxy(t *testing.T, p *chaos.Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echoOnce writes msg on c and reads it back, within ioTimeout.
func echoOnce(c net.Conn, msg string) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: got " + string(buf) + ", want " + msg)
	}
	return nil
}

func mustEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := echoOnce(c, msg); err != nil {
		t.Fatalf("round trip %q: %v", msg, err)
	}
}

// expectSilence writes msg on c and checks that nothing comes back for
// silenceWindow: the read must end on its deadline, not with data or an error.
func expectSilence(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(silenceWindow))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want silenceWindow, got %d bytes %q, err %v", n, buf[:n], err)
	}
}

// expectClosed checks that c is closed by the far end: a read returns an
// error other than its deadline passing.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := c.Read(make([]byte, 64))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("want connection closed, got %d bytes, err %v", n, err)
	}
}

// expectRefusedOrClosed dials p and checks that the connection is closed at
// once. The proxy's reset may even beat the end of the client's connect, so a
// failed dial counts too.
func expectRefusedOrClosed(t *testing.T, p *chaos.Proxy) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
	if err != nil {
		return
	}
	defer func() { _ = c.Close() }()
	expectClosed(t, c)
}

// waitUntilTrue polls cond until it holds or ioTimeout passes.
func waitUntilTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProxyAccessors(t *testing.T) {
	checkProxyLeaks(t)
	target := startEchoServer(t)
	p := newTestProxy(t, target)
	if p.Name() != "test" || p.Target() != target || p.Addr() == "" {
		t.Fatalf("Name/Target/Addr = %q %q %q", p.Name(), p.Target(), p.Addr())
	}
	steps := []struct {
		do   func()
		want string
	}{
		{func() {}, "pass"},
		{func() { p.SetDelay(50 * time.Millisecond) }, "pass+delay=50ms"},
		{p.Blackhole, "blackhole+delay=50ms"},
		{func() { p.SetDelay(0) }, "blackhole"},
		{p.Drop, "drop"},
		{p.Heal, "pass"},
	}
	for _, s := range steps {
		s.do()
		if got := p.Mode(); got != s.want {
			t.Errorf("Mode() = %q, want %q", got, s.want)
		}
	}
}

func TestNewProxyErrors(t *testing.T) {
	checkProxyLeaks(t)
	if _, err := chaos.NewProxy("bad", "127.0.0.1:0", "no-port"); err == nil {
		t.Error("NewProxy with bad target: want error")
	}
	if _, err := chaos.NewProxy("bad", "256.0.0.1:0", "127.0.0.1:1"); err == nil {
		t.Error("NewProxy with bad listen address: want error")
	}
}

func TestProxyPass(t *testing.T) {
	checkProxyLeaks(t)
	p := newTestProxy(t, startEchoServer(t))
	c := dialProxy(t, p)
	for _, msg := range []string{"hello", "world", string(bytes.Repeat([]byte("x"), 100<<10))} {
		mustEcho(t, c, msg)
	}
}

func TestProxyConns(t *testing.T) {
	checkProxyLeaks(t)
	p := newTestProxy(t, startEchoServer(t))
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d before any connection", n)
	}
	a, b := dialProxy(t, p), dialProxy(t, p)
	mustEcho(t, a, "a") // an echo proves the pair is registered
	mustEcho(t, b, "b")
	if n := p.Conns(); n != 2 {
		t.Fatalf("Conns() = %d, want 2", n)
	}
	_ = a.Close()
	waitUntilTrue(t, "Conns() == 1", func() bool { return p.Conns() == 1 })
	p.Blackhole()
	_ = dialProxy(t, p) // held silently, but counted
	waitUntilTrue(t, "Conns() == 2", func() bool { return p.Conns() == 2 })
	p.Heal()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d after Heal, want 0", n)
	}
}

func TestProxyBlackholeAndHeal(t *testing.T) {
	checkProxyLeaks(t)
	p := newTestProxy(t, startEchoServer(t))
	old := dialProxy(t, p)
	mustEcho(t, old, "before")

	p.Blackhole()
	expectSilence(t, old, "lost")
	expectSilence(t, old, "lost again")
	held := dialProxy(t, p) // the kernel accepts; the proxy holds it silently
	expectSilence(t, held, "into the void")

	p.Heal()
	expectClosed(t, old)
	expectClosed(t, held)
	c := dialProxy(t, p)
	mustEcho(t, c, "after") // and nothing sent during the partition
}

func TestProxyDrop(t *testing.T) {
	checkProxyLeaks(t)
	p := newTestProxy(t, startEchoServer(t))
	old := dialProxy(t, p)
	mustEcho(t, old, "before")

	p.Drop()
	expectClosed(t, old)
	expectRefusedOrClosed(t, p)
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d while dropping, want 0", n)
	}

	p.Heal()
	mustEcho(t, dialProxy(t, p), "after")
}

func TestProxyDelay(t *testing.T) {
	checkProxyLeaks(t)
	p := newTestProxy(t, startEchoServer(t))
	c := dialProxy(t, p)
	mustEcho(t, c, "warm up")

	const delay = 100 * time.Millisecond
	p.SetDelay(delay)
	start := time.Now()
	mustEcho(t, c, "slow")
	if rtt := time.Since(start); rtt < 2*delay {
		t.Fatalf("round trip took %v, want at least %v", rtt, 2*delay)
	}
}

// TestProxyDelayKeepsOrder sends many small writes through a delayed proxy, and
// removes the delay halfway through, which must not let later bytes overtake
// earlier ones still waiting out the delay.
func TestProxyDelayKeepsOrder(t *testing.T) {
	checkProxyLeaks(t)
	p := newTestProxy(t, startEchoServer(t))
	c := dialProxy(t, p)
	const delay = 50 * time.Millisecond
	p.SetDelay(delay)

	const n, step = 2000, 4
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(i % 251)
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += step {
			switch {
			case i < n/2:
				// Pace the first half so the proxy reads it as many
				// separate chunks, each delayed.
				time.Sleep(time.Millisecond)
			case i == n/2:
				p.SetDelay(0)
			}
			if _, err := c.Write(want[i : i+step]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := make([]byte, n)
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if i := firstByteDiff(got, want); i >= 0 {
		t.Fatalf("byte %d: got %d, want %d", i, got[i], want[i])
	}
	if took := time.Since(start); took < 2*delay {
		t.Fatalf("echo took %v, want at least %v", took, 2*delay)
	}
}

func firstByteDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestProxyCloseWithOpenConns(t *testing.T) {
	checkProxyLeaks(t)
	target := startEchoServer(t)
	p, err := chaos.NewProxy("close", "127.0.0.1:0", target)
	if err != nil {
		t.Fatalf("NewProxy: %v", err)
	}
	p.SetDelay(time.Hour) // a chunk stuck waiting out the delay
	conns := []net.Conn{dialProxy(t, p), dialProxy(t, p)}
	if _, err := conns[0].Write([]byte("never delivered")); err != nil {
		t.Fatalf("write: %v", err)
	}
	p.Blackhole()
	conns = append(conns, dialProxy(t, p)) // one held silently
	waitUntilTrue(t, "Conns() == 3", func() bool { return p.Conns() == 3 })

	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Close did not return")
	}
	for _, c := range conns {
		expectClosed(t, c)
	}
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d after Close", n)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout); err == nil {
		_ = c.Close()
		t.Fatal("dial after Close succeeded")
	}
}

// TestProxyNATSPartition puts a nats-server behind the proxy and checks that a
// client notices a black hole through its pings, and reconnects once healed.
func TestProxyNATSPartition(t *testing.T) {
	checkProxyLeaks(t)
	s := startNATSServer(t)
	p := newTestProxy(t, s.Addr().String())

	// The responder talks to the server directly; only the requester is
	// behind the proxy.
	responder, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect responder: %v", err)
	}
	t.Cleanup(responder.Close)
	if _, err := responder.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	disconnected := make(chan struct{}, 1)
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect("nats://"+p.Addr(),
		nats.Name(t.Name()),
		nats.PingInterval(200*time.Millisecond),
		nats.MaxPingsOutstanding(2),
		nats.ReconnectWait(100*time.Millisecond),
		nats.MaxReconnects(-1),
		nats.Timeout(time.Second),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { signalNonBlocking(disconnected) }),
		nats.ReconnectHandler(func(*nats.Conn) { signalNonBlocking(reconnected) }),
	)
	if err != nil {
		t.Fatalf("connect through proxy: %v", err)
	}
	t.Cleanup(nc.Close)
	natsEcho(t, nc, "before")

	p.Blackhole()
	start := time.Now()
	waitSignal(t, disconnected, "disconnect while black-holed")
	t.Logf("disconnect noticed after %v", time.Since(start))
	select {
	case <-reconnected:
		t.Fatal("reconnected through a black hole")
	case <-time.After(silenceWindow):
	}

	p.Heal()
	start = time.Now()
	waitSignal(t, reconnected, "reconnect after heal")
	t.Logf("reconnected %v after heal", time.Since(start))
	natsEcho(t, nc, "after")
}

func startNATSServer(t *testing.T) *natsserver.Server {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(ioTimeout) {
		t.Fatal("nats server not ready")
	}
	return s
}

func natsEcho(t *testing.T, nc *nats.Conn, msg string) {
	t.Helper()
	reply, err := nc.Request("echo", []byte(msg), ioTimeout)
	if err != nil {
		t.Fatalf("request %q: %v", msg, err)
	}
	if string(reply.Data) != msg {
		t.Fatalf("reply %q, want %q", reply.Data, msg)
	}
}

// signalNonBlocking signals ch without blocking.
func signalNonBlocking(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// waitSignal waits for a signal on ch, for at most ioTimeout.
func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(ioTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Package leaktest holds the goroutine-leak check settings every package's
// TestMain uses: goroutines of nats-server and nats.go that end a moment
// after Shutdown or Close returns, and the thread that forks node workers,
// which lives as long as the process (so Pdeathsig keeps working).
package leaktest

import "go.uber.org/goleak"

// Options are the goleak options for goleak.VerifyTestMain.
func Options() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("time.Sleep"),
		goleak.IgnoreTopFunction("github.com/restartcoord/restartcoord/node.startLocked.func1.1"),
		// nats.go v1.55 starts this for an async publish and may leave it
		// on a nil channel for ever when the connection's status channel is
		// cleared before it reads it (a race in nats.go, seen once in a CI
		// rehearsal after bus's PublishAsync test): nats.go's, not ours.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	}
}

package client_test

import (
	"os"
	"testing"

	"github.com/restartcoord/restartcoord/node"
	"go.uber.org/goleak"
)

// TestMain doubles as the node's worker: the supervisor the tests start
// re-executes this test binary, and the environment says which role it plays.
func TestMain(m *testing.M) {
	if node.IsWorker() {
		os.Exit(node.RunWorker())
	}
	goleak.VerifyTestMain(m,
		// nats-server and nats.go background goroutines that end a moment
		// after Shutdown/Close returns.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("time.Sleep"),
		// The thread that forks workers lives as long as the process (Pdeathsig).
		goleak.IgnoreTopFunction("github.com/restartcoord/restartcoord/node.startLocked.func1.1"),
	)
}

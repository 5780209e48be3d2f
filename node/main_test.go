package node_test

import (
	"os"
	"testing"

	"github.com/restartcoord/restartcoord/internal/leaktest"
	"github.com/restartcoord/restartcoord/node"
	"go.uber.org/goleak"
)

// TestMain doubles as the worker: the supervisor re-executes this test
// binary, and the environment says which role it plays.
func TestMain(m *testing.M) {
	if node.IsWorker() {
		os.Exit(node.RunWorker())
	}
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

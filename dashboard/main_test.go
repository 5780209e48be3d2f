package dashboard_test

import (
	"os"
	"testing"

	"github.com/restartcoord/restartcoord/internal/leaktest"
	"github.com/restartcoord/restartcoord/node"
	"go.uber.org/goleak"
)

// The nodes of these tests run in this process; their workers are this
// test binary started again in worker mode.
func TestMain(m *testing.M) {
	if node.IsWorker() {
		os.Exit(node.RunWorker())
	}
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

package coordinator_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/restartcoord/restartcoord/internal/leaktest"
	"github.com/restartcoord/restartcoord/node"
	"go.uber.org/goleak"
)

// envNode makes the test binary run a whole node (supervisor) from a JSON
// config, so a test can kill a node with SIGKILL as a host failure would.
const envNode = "RESTARTCOORD_TEST_NODE"

func TestMain(m *testing.M) {
	if node.IsWorker() {
		os.Exit(node.RunWorker())
	}
	if cfgJSON := os.Getenv(envNode); cfgJSON != "" {
		var cfg node.Config
		if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
			os.Exit(2)
		}
		sup, err := node.NewSupervisor(cfg)
		if err != nil {
			os.Exit(2)
		}
		if err := sup.Run(context.Background(), nil); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

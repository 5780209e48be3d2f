package node_test

import (
	"context"
	"encoding/json"
	"syscall"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

func syscallKill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func busLeaseHolder(e *env, nodeID string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return bus.LeaseHolder(ctx, e.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode(nodeID))
}

package node

import (
	"fmt"
	"testing"

	"github.com/restartcoord/restartcoord/bus"
)

// A worker that finds the node id lease free exits as a temporary failure.
func TestLeaseFreeIsTransient(t *testing.T) {
	if err := fmt.Errorf("start: %w", errLeaseFree); !bus.Transient(err) {
		t.Errorf("bus.Transient(%v) = false, want true", err)
	}
}

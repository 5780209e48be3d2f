package node

import (
	"errors"
	"os/exec"
)

// exitTempFail is the worker's exit code when it could not start because
// NATS or JetStream did not answer (EX_TEMPFAIL): a JetStream leader
// election after a server was lost or a partition healed. The supervisor
// starts another worker within the same restart instead of failing it.
const exitTempFail = 75

// errLeaseFree: the node-id lease expired (refreshes could not reach NATS)
// and the supervisor has not taken it again yet; a worker started later
// finds it held again. Temporary, as bus.Transient understands it.
var errLeaseFree error = leaseFree{}

type leaseFree struct{}

func (leaseFree) Error() string {
	return "node id lease is free (expired while NATS was away); the supervisor takes it again"
}
func (leaseFree) Temporary() bool { return true }

// tempFailed reports whether the worker has exited, with exitTempFail.
func (p *proc) tempFailed() bool {
	select {
	case <-p.exited:
	default:
		return false
	}
	var ee *exec.ExitError
	return errors.As(p.exitErr, &ee) && ee.ExitCode() == exitTempFail
}

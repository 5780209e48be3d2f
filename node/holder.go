package node

import (
	"encoding/json"
	"fmt"
	"os"
)

// Holder is the value of a node-id lease: the supervisor's instance string
// and what proves, on the same machine, whether the process that wrote it
// still exists. A supervisor killed with -9 leaves its lease for its TTL;
// the one systemd starts next reads this record and, when it can prove the
// writer dead, takes the lease at once instead of waiting (see
// Supervisor.takeNodeID).
//
// A process is named by its PID and start time (field 22 of
// /proc/<pid>/stat, clock ticks since boot), which a reused PID does not
// share; both mean something only within one boot (BootID) and one PID
// namespace (PIDNamespace); Host keeps two machines or containers that share
// a kernel apart.
type Holder struct {
	Instance     string `json:"instance"`
	Host         string `json:"host"`
	BootID       string `json:"boot_id,omitempty"`
	PIDNamespace string `json:"pid_ns,omitempty"` // readlink /proc/self/ns/pid: "pid:[4026531836]"
	PID          int    `json:"pid"`
	StartTicks   uint64 `json:"start_ticks,omitempty"`
}

// ProcessHolder is the record of process pid (as seen from this process)
// holding a lease as instance. Facts it cannot read are left empty, which
// makes the record unprovable later, never wrongly provable; the error says
// which were missing.
func ProcessHolder(instance string, pid int) (Holder, error) {
	h := Holder{Instance: instance, PID: pid}
	var err, e error
	if h.Host, e = os.Hostname(); e != nil {
		err = e
	}
	if h.BootID, e = bootID(); e != nil {
		err = e
	}
	if h.PIDNamespace, e = pidNamespace(); e != nil {
		err = e
	}
	if st, e := readProcStat(pid); e != nil {
		err = e
	} else {
		h.StartTicks = st.startTicks
	}
	return h, err
}

// ParseHolder decodes a lease value. Values written before the record
// existed (the bare instance string) and anything else that is not a record
// with an instance give false: such a holder cannot be proven dead.
func ParseHolder(v []byte) (Holder, bool) {
	var h Holder
	if json.Unmarshal(v, &h) != nil || h.Instance == "" {
		return Holder{}, false
	}
	return h, true
}

// holderInstance is the instance named by a lease value, in either form:
// a record's instance, or the bare string older supervisors wrote.
func holderInstance(v string) string {
	if h, ok := ParseHolder([]byte(v)); ok {
		return h.Instance
	}
	return v
}

// Marshal is the lease value.
func (h Holder) Marshal() []byte {
	b, _ := json.Marshal(h) // a struct of strings and numbers: cannot fail
	return b
}

// ProvenDead reports whether the recorded process is gone for certain,
// with the reason either way. It is proven dead only when the record was
// written on this machine in this boot and this PID namespace (same host
// name, boot id and namespace as this process, and this process's /proc
// is of that namespace), and /proc shows no such process, or a process
// with that PID but another start time (the PID reused), or a zombie (it
// exited; only its parent has not reaped it). Anything that cannot be read
// or compared is not proof: the caller falls back to waiting.
func (h Holder) ProvenDead() (bool, string) {
	if h.PID <= 0 || h.StartTicks == 0 || h.Host == "" || h.BootID == "" || h.PIDNamespace == "" {
		return false, "the record is incomplete"
	}
	host, err := os.Hostname()
	if err != nil || host != h.Host {
		return false, fmt.Sprintf("recorded on host %q, this is %q", h.Host, host)
	}
	if boot, err := bootID(); err != nil || boot != h.BootID {
		return false, fmt.Sprintf("recorded in boot %s, this is boot %s (%v)", h.BootID, boot, err)
	}
	if ns, err := pidNamespace(); err != nil || ns != h.PIDNamespace {
		return false, fmt.Sprintf("recorded in PID namespace %s, this is %s (%v)", h.PIDNamespace, ns, err)
	}
	if !procIsOurs() {
		// /proc mounted from another PID namespace would answer about
		// other processes under the same numbers.
		return false, "/proc here is not of this process's PID namespace"
	}
	st, err := readProcStat(h.PID)
	switch {
	case os.IsNotExist(err):
		return true, fmt.Sprintf("process %d no longer exists", h.PID)
	case err != nil:
		return false, fmt.Sprintf("process %d: %v", h.PID, err)
	case st.startTicks != h.StartTicks:
		return true, fmt.Sprintf("process %d started at tick %d, not %d: its PID was reused", h.PID, st.startTicks, h.StartTicks)
	case h.PID == os.Getpid():
		// Cannot be: this process has its own instance. Never called dead.
		return false, "the record names this very process"
	case st.state == 'Z' || st.state == 'X':
		return true, fmt.Sprintf("process %d has exited (state %c, not yet reaped)", h.PID, st.state)
	}
	return false, fmt.Sprintf("process %d is alive (state %c, same start time)", h.PID, st.state)
}

package node

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The facts Holder records, read from Linux's /proc.

// bootID changes at every boot: process start times count from it.
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// pidNamespace names this process's PID namespace, e.g. "pid:[4026531836]":
// PIDs mean something only within one.
func pidNamespace() (string, error) { return os.Readlink("/proc/self/ns/pid") }

// procIsOurs reports whether /proc shows this process under its own PID,
// i.e. /proc was mounted for this process's PID namespace.
func procIsOurs() bool {
	self, err := os.Readlink("/proc/self")
	return err == nil && self == strconv.Itoa(os.Getpid())
}

type procStat struct {
	state      byte
	startTicks uint64
}

// readProcStat reads the state (field 3) and the start time (field 22, in
// clock ticks since boot) of /proc/<pid>/stat. A process that does not
// exist gives an error satisfying os.IsNotExist.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// Field 2, the command name, is in parentheses and may hold spaces and
	// parentheses itself: the fields after it start past the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return procStat{state: f[0][0], startTicks: start}, nil
}

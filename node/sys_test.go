package node_test

import (
	"encoding/json"
	"syscall"
)

func syscallKill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// Package hangtest ends a test binary whose test hangs, long before go
// test's -timeout would, and says which test it was and where this
// module's goroutines stand. go test's own timeout names the test only in
// a few lines above a dump of every goroutine (nats-server's included),
// which a CI log cut to its tail loses.
package hangtest

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// module marks the goroutines worth printing: those with a frame of ours.
const module = "github.com/restartcoord/restartcoord/"

// Guard exits the process with status 2 if t, its cleanups included, is
// still running after d. Call it first in a test (or its set-up helper), so
// that its cleanup runs last.
func Guard(t testing.TB, d time.Duration) {
	timer := time.AfterFunc(d, func() { hung(t.Name(), d) })
	t.Cleanup(func() { timer.Stop() })
}

func hung(name string, d time.Duration) {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out bytes.Buffer
	fmt.Fprintf(&out, "panic: %s still running after %s (hang guard); goroutines with a frame in this module:\n\n", name, d)
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(module)) && !bytes.Contains(g, []byte("internal/hangtest.hung")) {
			out.Write(g)
			out.WriteString("\n\n")
		}
	}
	fmt.Fprintf(&out, "panic: %s hung for %s (hang guard; stacks above)\n", name, d)
	_, _ = os.Stderr.Write(out.Bytes())
	os.Exit(2)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

const restartUsage = "restartcoord restart NODE [--graceful=true|false] [--emergency] [--no-preserve-state] [--reason R] [--timeout-secs N] [--restart-id ID] [--json] [-s URL] [--timeout DURATION]"

// runRestart asks a node to restart its worker and waits for the result.
func runRestart(ctx context.Context, args []string) error {
	o := newOpsFlags("restart", restartUsage)
	fs := o.fs
	graceful := fs.Bool("graceful", true, "drain, snapshot and stop the worker; false is the emergency restart")
	emergency := fs.Bool("emergency", false, "emergency restart: kill the worker at once, no drain, no snapshot (same as --graceful=false)")
	noPreserve := fs.Bool("no-preserve-state", false, "skip writing a snapshot (faster; state is still restored from the journal, nothing is discarded)")
	reason := fs.String("reason", string(schema.ReasonManualRequest), "why: "+reasonList())
	timeoutSecs := fs.Float64("timeout-secs", schema.DefaultRestartTimeout,
		fmt.Sprintf("seconds the graceful part may take (%d..%d); then the worker is killed", schema.MinRestartTimeout, schema.MaxRestartTimeout))
	restartID := fs.String("restart-id", "", "caller-chosen id: repeating it never starts a second restart, it waits for or returns the first one's result")
	pos, err := parse(fs, args, restartUsage)
	if err != nil {
		return err
	}
	node, err := nodeArg(pos, restartUsage)
	if err != nil {
		return err
	}
	body, timeout, err := restartBody(o.set(), *graceful, *emergency, *noPreserve, *reason, *timeoutSecs, *restartID)
	if err != nil {
		return err
	}
	wait := o.conn.wait(schema.Seconds(timeout) + restartExtraWait)

	conn, err := o.dial(ctx, "restart")
	if err != nil {
		return err
	}
	defer conn.Close()
	if !*o.asJSON {
		stop := showPhases(conn, node, *restartID)
		defer stop()
	}
	data, err := nodeCall(ctx, conn, node, schema.OpRestart, body, wait, *o.asJSON)
	if err != nil {
		return err
	}
	var res schema.RestartResult
	if err := decodeReply(node, schema.OpRestart, data, &res); err != nil {
		return err
	}
	if *o.asJSON {
		if err := printRaw(data); err != nil {
			return err
		}
	} else {
		renderRestart(opsOut, &res)
	}
	if !res.Success {
		return &exitError{code: exitFailed, err: fmt.Errorf("restart %s of %s failed: %s", res.RestartID, node, resultError(&res))}
	}
	return nil
}

// restartBody builds the request from the flags the user set only, so the
// node's defaults apply to the rest, and checks it as the node would.
func restartBody(set map[string]bool, graceful, emergency, noPreserve bool, reason string, timeoutSecs float64, restartID string) (map[string]any, float64, error) {
	body := map[string]any{}
	if set["graceful"] {
		body["graceful"] = graceful
	}
	if set["emergency"] && emergency {
		if set["graceful"] && graceful {
			return nil, 0, usageErr("--emergency contradicts --graceful=true")
		}
		body["graceful"] = false
	}
	if set["no-preserve-state"] && noPreserve {
		body["preserve_state"] = false
	}
	if set["reason"] {
		if !schema.Reason(reason).Valid() {
			return nil, 0, usageErr("--reason %q: want one of %s", reason, reasonList())
		}
		body["reason"] = reason
	}
	timeout := float64(schema.DefaultRestartTimeout)
	if set["timeout-secs"] {
		if math.IsNaN(timeoutSecs) || timeoutSecs < schema.MinRestartTimeout || timeoutSecs > schema.MaxRestartTimeout {
			return nil, 0, usageErr("--timeout-secs must be %d..%d seconds, got %v", schema.MinRestartTimeout, schema.MaxRestartTimeout, timeoutSecs)
		}
		timeout = timeoutSecs
		body["timeout"] = timeoutSecs
	}
	if set["restart-id"] {
		if !schema.ValidToken(restartID) {
			return nil, 0, usageErr("--restart-id %q: must be 1..64 letters, digits, '-' or '_'", restartID)
		}
		body["restart_id"] = restartID
	}
	return body, timeout, nil
}

func reasonList() string {
	s := make([]string, len(schema.Reasons))
	for i, r := range schema.Reasons {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// resultError is the error of a failed result, however the node put it.
func resultError(r *schema.RestartResult) string {
	switch {
	case r.Error != nil:
		return r.Error.Error() + detailSuffix(r.Error)
	case len(r.Errors) > 0:
		return strings.Join(r.Errors, "; ")
	case r.Message != "":
		return r.Message
	}
	return "phase " + string(r.Phase)
}

// showPhases prints the node's phase changes to stderr while a restart runs,
// when stderr is a terminal (scripts get only the result).
func showPhases(conn *bus.Conn, node, restartID string) (stop func()) {
	if fi, err := os.Stderr.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 || opsErrOut != os.Stderr {
		return func() {}
	}
	start := time.Now()
	sub, err := conn.Subscribe(schema.NodeEventSubject(node, schema.EventPhase), func(m *nats.Msg) {
		var ev schema.PhaseEvent
		if json.Unmarshal(m.Data, &ev) != nil || (restartID != "" && ev.RestartID != restartID) {
			return
		}
		line := fmt.Sprintf("  %6s  %-22s %3d%%", fmtSecs(time.Since(start).Seconds()), ev.Phase, ev.Progress)
		if ev.Message != "" {
			line += "  " + ev.Message
		}
		fmt.Fprintln(opsErrOut, line)
	})
	if err != nil {
		return func() {}
	}
	return func() { _ = sub.Unsubscribe() }
}

package main

import (
	"context"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// queryNode runs a read-only node verb: parse the flags, check NODE, send
// body to op and hand the reply to show, which prints it and says the exit
// code.
// wait is called after body (whose checks may decide it) and gives the
// verb's default; --timeout overrides it.
func queryNode(ctx context.Context, o *opsFlags, args []string, usage, op string, wait func() time.Duration,
	body func(node string) (any, error), show func(node string, data []byte, asJSON bool) error) error {
	pos, err := parse(o.fs, args, usage)
	if err != nil {
		return err
	}
	node, err := nodeArg(pos, usage)
	if err != nil {
		return err
	}
	b, err := body(node)
	if err != nil {
		return err
	}
	conn, err := o.dial(ctx, op)
	if err != nil {
		return err
	}
	defer conn.Close()
	data, err := nodeCall(ctx, conn, node, op, b, o.conn.wait(wait()), *o.asJSON)
	if err != nil {
		return err
	}
	return show(node, data, *o.asJSON)
}

func emptyBody(string) (any, error) { return map[string]any{}, nil }

// within is a fixed default wait.
func within(d time.Duration) func() time.Duration { return func() time.Duration { return d } }

const healthUsage = "restartcoord health NODE [--json] [-s URL] [--timeout DURATION]"

// runHealth prints a node's health; exit 1 when it is unhealthy.
func runHealth(ctx context.Context, args []string) error {
	o := newOpsFlags("health", healthUsage)
	return queryNode(ctx, o, args, healthUsage, schema.OpHealth, within(defaultQueryWait), emptyBody,
		func(node string, data []byte, asJSON bool) error {
			var h schema.Health
			if err := decodeReply(node, schema.OpHealth, data, &h); err != nil {
				return err
			}
			if asJSON {
				if err := printRaw(data); err != nil {
					return err
				}
			} else {
				renderHealth(opsOut, &h)
			}
			if !h.Healthy {
				return &silentExit{code: exitFailed}
			}
			return nil
		})
}

const statusUsage = "restartcoord status NODE [--history] [--limit N] [--json] [-s URL] [--timeout DURATION]"

// runStatus prints a node's restart status (and history).
func runStatus(ctx context.Context, args []string) error {
	o := newOpsFlags("status", statusUsage)
	history := o.fs.Bool("history", false, "include the recent restarts and totals")
	limit := o.fs.Int("limit", 10, "how many recent restarts to show (1..1000; implies --history)")
	body := func(string) (any, error) {
		set := o.set()
		b := map[string]any{}
		if *history || set["limit"] {
			b["include_history"] = true
		}
		if set["limit"] {
			if *limit < 1 || *limit > 1000 {
				return nil, usageErr("--limit must be 1..1000, got %d", *limit)
			}
			b["limit"] = *limit
		}
		return b, nil
	}
	return queryNode(ctx, o, args, statusUsage, schema.OpRestartStatus, within(defaultQueryWait), body,
		func(node string, data []byte, asJSON bool) error {
			if asJSON {
				return printRaw(data)
			}
			var s schema.RestartStatus
			if err := decodeReply(node, schema.OpRestartStatus, data, &s); err != nil {
				return err
			}
			if s.NodeID == "" {
				s.NodeID = node
			}
			renderStatus(opsOut, &s)
			return nil
		})
}

const prepareUsage = "restartcoord prepare NODE [--json] [-s URL] [--timeout DURATION]"

// runPrepare asks whether a node is ready for shutdown; exit 1 when not.
func runPrepare(ctx context.Context, args []string) error {
	o := newOpsFlags("prepare", prepareUsage)
	return queryNode(ctx, o, args, prepareUsage, schema.OpPrepare, within(defaultQueryWait), emptyBody,
		func(node string, data []byte, asJSON bool) error {
			var r schema.ShutdownReadiness
			if err := decodeReply(node, schema.OpPrepare, data, &r); err != nil {
				return err
			}
			if asJSON {
				if err := printRaw(data); err != nil {
					return err
				}
			} else {
				renderPrepare(opsOut, node, &r)
			}
			if !r.ReadyForShutdown {
				return &silentExit{code: exitFailed}
			}
			return nil
		})
}

const reconnectUsage = "restartcoord reconnect-test NODE [--session ID] [--json] [-s URL] [--timeout DURATION]"

// runReconnectTest tests a node's client sessions; exit 1 unless pass.
func runReconnectTest(ctx context.Context, args []string) error {
	o := newOpsFlags("reconnect-test", reconnectUsage)
	session := o.fs.String("session", "", "test only this session id")
	body := func(string) (any, error) {
		b := map[string]any{}
		if o.set()["session"] {
			if !schema.ValidToken(*session) {
				return nil, usageErr("--session %q: must be 1..64 letters, digits, '-' or '_'", *session)
			}
			b["session_id"] = *session
		}
		return b, nil
	}
	return queryNode(ctx, o, args, reconnectUsage, schema.OpReconnectTest, within(defaultReconWait), body,
		func(node string, data []byte, asJSON bool) error {
			var r schema.ReconnectTest
			if err := decodeReply(node, schema.OpReconnectTest, data, &r); err != nil {
				return err
			}
			if asJSON {
				if err := printRaw(data); err != nil {
					return err
				}
			} else {
				renderReconnect(opsOut, node, &r)
			}
			if r.OverallStatus != schema.StatusPass {
				return &silentExit{code: exitFailed}
			}
			return nil
		})
}

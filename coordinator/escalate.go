package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// escalate looks at the nodes' alert conditions (nodeAlerts), then climbs
// the ladder for every node whose supervisor answers but whose worker has
// stayed unhealthy for UnhealthyGrace, and keeps each node's ladder state
// in ORCH_COORD so a new leader goes on from there.
func (c *Coordinator) escalate(ctx context.Context, term uint64, planned map[string]bool) {
	c.nodeAlerts(ctx)
	if open, _ := c.brk.Open(); open {
		return
	}
	now := time.Now()
	for _, v := range c.mem.snapshot() {
		id := v.Info.NodeID
		m := v.member(c.answerWindow(), now)
		c.mu.Lock()
		busy := c.inflight[id]
		c.mu.Unlock()
		if busy || planned[id] || m.Restarting {
			continue
		}
		ns, _, err := c.state.getNode(ctx, id)
		if err != nil {
			continue
		}
		f := Facts{Answering: m.Answering, Healthy: m.Healthy, HealthySince: v.HealthySince, Failures: ns.Failures,
			LastAttempt: ns.LastAttempt, Quarantined: ns.Quarantined, Restarts: v.Restarts}
		if !m.Healthy && m.Answering && now.Sub(v.UnhealthySince) < c.cfg.UnhealthyGrace {
			continue
		}
		d := c.cfg.Ladder.Decide(f, now)
		switch d.Action {
		case ActNone:
			if d.Reset && ns.Failures > 0 {
				ns.Failures, ns.Level, ns.Degraded, ns.Reason = 0, LevelNone, false, d.Reason
				_ = c.state.putNode(ctx, id, ns)
			}
		case ActQuarantine:
			ns.Quarantined, ns.Level, ns.Degraded, ns.Reason = true, LevelEngineering, true, d.Reason
			if c.state.putNode(ctx, id, ns) == nil {
				c.raise(ctx, schema.AlertQuarantine, id, "", func() (string, map[string]any) {
					return fmt.Sprintf("node %s quarantined: %s", id, d.Reason), map[string]any{"failures": ns.Failures, "level": LevelEngineering}
				})
			}
		case ActGraceful, ActEmergency:
			if d.Delay > 0 {
				continue
			}
			c.mu.Lock()
			c.inflight[id] = true
			c.mu.Unlock()
			go c.ladderRestart(context.WithoutCancel(ctx), id, d, term)
		}
	}
}

// ladderRestart makes one rung's restart and records its outcome.
func (c *Coordinator) ladderRestart(ctx context.Context, id string, d Decision, term uint64) {
	defer func() {
		c.mu.Lock()
		delete(c.inflight, id)
		c.mu.Unlock()
	}()
	req := schema.DefaultRestartRequest()
	req.Graceful, req.Reason = d.Action == ActGraceful, schema.ReasonErrorRecovery
	c.log.Info("escalation restart", "node", id, "action", d.Action, "reason", d.Reason)
	res, err := c.restart(ctx, id, req, term)
	var se *schema.Error
	if errors.As(err, &se) && (se.Code == schema.CodeRestartInProgress || se.Code == schema.CodeStaleFencingToken) {
		return // not an attempt: someone else is restarting it, or we are deposed
	}
	ns, _, gerr := c.state.getNode(ctx, id)
	if gerr != nil {
		return
	}
	ns.LastAttempt = time.Now().UTC()
	if err != nil || !res.Success {
		ns.Failures++
	}
	before := ns.Level
	ns.Level = c.cfg.Ladder.level(ns.Failures)
	ns.Degraded = ns.Level >= LevelOperations
	ns.Reason = d.Reason
	if err := c.state.putNode(ctx, id, ns); err != nil {
		return
	}
	if ns.Level >= LevelOperations && before < LevelOperations {
		c.raise(ctx, schema.AlertDegraded, id, "", func() (string, map[string]any) {
			return fmt.Sprintf("node %s degraded after %d failed automatic restarts", id, ns.Failures),
				map[string]any{"failures": ns.Failures, "level": ns.Level, "last_error": errString(err, res)}
		})
	}
}

func errString(err error, res schema.RestartResult) string {
	if err != nil {
		return err.Error()
	}
	if res.Error != nil {
		return res.Error.Message
	}
	return ""
}

package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// positiveOr is d, or def when d is not positive (a Config field not set).
func positiveOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// nodeAlerts looks at every node's alert conditions, once a leader's pass:
//   - health_check_failed: raised for a node that answers but has been
//     unhealthy for UnhealthyAlertAfter (detect raises it for a silent
//     node declared failed); resolved once the node is healthy again;
//   - restart_frequency: more than Ladder.FrequencyLimit restarts in
//     Ladder.FrequencyOver; resolved when the count falls back to the limit;
//   - escalation_degraded and escalation_quarantine (which the ladder
//     raises when it degrades or quarantines a node): open while the node
//     is degraded (quarantined) and not healthy; resolved once it is
//     healthy again or released;
//   - and resolves the conditions of nodes no longer registered (stopped
//     or forgotten).
//
// Not while the whole fleet is silent (fleetSilent: likely this
// coordinator's own cut-off), nor before the conditions open are read.
func (c *Coordinator) nodeAlerts(ctx context.Context) {
	now := time.Now()
	if c.fleetSilent(now) || !c.conditionsReady(ctx) {
		return
	}
	after := positiveOr(c.cfg.UnhealthyAlertAfter, DefaultUnhealthyAlertAfter)
	views := c.mem.snapshot()
	present := make(map[string]bool, len(views))
	for _, v := range views {
		id := v.Info.NodeID
		present[id] = true
		if v.LastHeartbeat.IsZero() {
			continue // not heard from yet
		}
		m := v.member(c.answerWindow(), now)
		c.healthAlert(ctx, v, m, after, now)
		c.frequencyAlert(ctx, v, now)
		if ns, _, err := c.state.getNode(ctx, id); err == nil {
			c.escalationAlerts(ctx, id, ns, m.Healthy)
		}
	}
	if now.Sub(c.started) < 2*c.answerWindow() {
		return // the registry may not be read yet
	}
	for _, cd := range c.openWhere(func(cd condition) bool { return cd.Node != "" && cd.Roll == "" && !present[cd.Node] }) {
		c.settle(ctx, cd.Kind, cd.Node, "", func() (string, map[string]any) {
			return fmt.Sprintf("node %s is no longer registered (stopped or forgotten): %s closed", cd.Node, cd.Kind),
				map[string]any{"reason": "node_gone"}
		})
	}
}

// healthAlert raises health_check_failed for a node answering but
// unhealthy for after, and resolves it once the node is healthy. A node
// declared failed is raised by detect as it declares it; here too, in case
// that raise was not kept (made in the moment a term began).
func (c *Coordinator) healthAlert(ctx context.Context, v NodeView, m Member, after time.Duration, now time.Time) {
	id := v.Info.NodeID
	switch {
	case m.Healthy:
		c.settle(ctx, schema.AlertHealthCheckFailed, id, "", func() (string, map[string]any) {
			return fmt.Sprintf("node %s healthy again", id), map[string]any{"healthy_since": v.HealthySince.UTC()}
		})
	case v.Failed:
		c.raiseHealth(ctx, id, HealthDeclaredFailed, func() (string, map[string]any) {
			return fmt.Sprintf("node %s declared failed: no heartbeat since %s", id, v.LastHeartbeat.UTC().Format(time.RFC3339)),
				map[string]any{"last_heartbeat": v.LastHeartbeat.UTC(), "silent_seconds": schema.Secs(now.Sub(v.LastHeartbeat))}
		})
	case m.Answering && !v.UnhealthySince.IsZero() && now.Sub(v.UnhealthySince) >= after:
		c.raiseHealth(ctx, id, HealthUnhealthy, func() (string, map[string]any) {
			bad := now.Sub(v.UnhealthySince)
			return fmt.Sprintf("node %s answers but has been unhealthy for %s (phase %s)", id, bad.Round(time.Second), orUnknown(v.Heartbeat.Phase)),
				map[string]any{"unhealthy_since": v.UnhealthySince.UTC(), "unhealthy_seconds": schema.Secs(bad),
					"phase": v.Heartbeat.Phase, "threshold_seconds": after.Seconds()}
		})
	}
}

func orUnknown(p schema.Phase) string {
	if p == "" {
		return "unknown"
	}
	return string(p)
}

// raiseHealth raises health_check_failed about node for reason. The node
// has one such condition whichever the reason; a node declared failed
// while it is open for being unhealthy is alerted again (a repeat: the
// same fingerprint, now declared_failed), since the report's downtime
// counts a node from the alert that declares it failed (outagesFrom).
func (c *Coordinator) raiseHealth(ctx context.Context, node, reason string, build func() (string, map[string]any)) {
	c.conditionsReady(ctx)
	if cd, open := c.isOpen(schema.AlertHealthCheckFailed, node, ""); open && (cd.Reason == reason || reason == HealthUnhealthy) {
		return
	}
	if !c.setCondition(ctx, condition{Kind: schema.AlertHealthCheckFailed, Node: node, Reason: reason, Since: time.Now().UTC()}, true) {
		return
	}
	msg, details := build()
	details["reason"] = reason
	c.alert(schema.SeverityCritical, schema.AlertHealthCheckFailed, node, msg, details)
}

// frequencyAlert tracks restart_frequency: more than FrequencyLimit
// restarts of the node (any cause) in the last FrequencyOver.
func (c *Coordinator) frequencyAlert(ctx context.Context, v NodeView, now time.Time) {
	l := c.cfg.Ladder
	n := l.RestartsWithin(v.Restarts, now)
	id := v.Info.NodeID
	c.track(ctx, n > l.FrequencyLimit, schema.AlertRestartFrequency, id, func() (string, map[string]any) {
		details := map[string]any{"restarts": n, "limit": l.FrequencyLimit, "window_seconds": l.FrequencyOver.Seconds()}
		if n > l.FrequencyLimit {
			return fmt.Sprintf("node %s restarted %d times in %s (more than %d)", id, n, l.FrequencyOver, l.FrequencyLimit), details
		}
		return fmt.Sprintf("node %s restarted %d times in the last %s (%d at most)", id, n, l.FrequencyOver, l.FrequencyLimit), details
	})
}

// escalationAlerts tracks escalation_degraded and escalation_quarantine:
// open while the node is degraded (quarantined) and not healthy.
func (c *Coordinator) escalationAlerts(ctx context.Context, id string, ns NodeState, healthy bool) {
	why := func(what string) func() (string, map[string]any) {
		return func() (string, map[string]any) {
			details := map[string]any{"failures": ns.Failures, "level": ns.Level, "reason": ns.Reason}
			switch {
			case healthy:
				return fmt.Sprintf("node %s healthy again (escalation level %d)", id, ns.Level), details
			case what == "degraded" && !ns.Degraded, what == "quarantined" && !ns.Quarantined:
				return fmt.Sprintf("node %s no longer %s: %s", id, what, ns.Reason), details
			}
			return fmt.Sprintf("node %s %s: %s", id, what, ns.Reason), details
		}
	}
	c.track(ctx, ns.Degraded && !healthy, schema.AlertDegraded, id, why("degraded"))
	c.track(ctx, ns.Quarantined && !healthy, schema.AlertQuarantine, id, why("quarantined"))
}

package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// healthConfirm bounds the health request that confirms a suspect: a live
// supervisor answers in milliseconds, and detection must stay under three
// heartbeat intervals plus 200 ms.
const healthConfirm = 200 * time.Millisecond

// detect declares failed the nodes that missed MissedHeartbeats heartbeats
// and do not answer a health request: counted unavailable, alerted on
// (health_check_failed, resolved by nodeAlerts once the node is healthy
// again), never restarted (a node that does not answer can only be waited
// for).
func (c *Coordinator) detect(ctx context.Context) {
	now := time.Now()
	// Nodes back from failed: recorded so the report ends their downtime.
	for _, r := range c.mem.takeRecovered() {
		c.alert(schema.SeverityInfo, AlertNodeRecovered, r.NodeID,
			fmt.Sprintf("node %s heard again %s after it was declared failed", r.NodeID, r.At.Sub(r.FailedAt).Round(time.Millisecond)),
			map[string]any{"failed_at": r.FailedAt.UTC(), "recovered_at": r.At.UTC(), "down_seconds": schema.Secs(r.At.Sub(r.FailedAt))})
	}
	if c.fleetSilent(now) {
		return
	}
	for _, id := range c.mem.suspects(c.cfg.HeartbeatInterval, c.cfg.MissedHeartbeats, now) {
		hctx, cancel := context.WithTimeout(ctx, healthConfirm)
		var h schema.Health
		err := c.conn.RequestJSON(hctx, schema.NodeSubject(id, schema.OpHealth), map[string]any{
			"include_reboot_readiness": false, "include_connection_status": false, "include_database_status": false}, nil, &h)
		cancel()
		if err == nil {
			continue // alive: heartbeats were only late
		}
		if !c.mem.markFailed(id, now) {
			continue
		}
		v, _ := c.mem.get(id)
		silent := now.Sub(v.LastHeartbeat)
		c.raiseHealth(ctx, id, HealthDeclaredFailed, func() (string, map[string]any) {
			return fmt.Sprintf("node %s declared failed: no heartbeat for %s and no answer to health", id, silent.Round(time.Millisecond)),
				map[string]any{"last_heartbeat": v.LastHeartbeat.UTC(), "silent_seconds": schema.Secs(silent), "error": err.Error()}
		})
	}
}

// breakerPass feeds the breaker the nodes unhealthy for reasons nobody
// planned (not those a roll or an operator is restarting).
func (c *Coordinator) breakerPass(ctx context.Context, planned map[string]bool) {
	now := time.Now()
	if c.fleetSilent(now) {
		return
	}
	views := c.mem.snapshot()
	counted := map[string]string{} // node -> why it counts, for the alert
	warm := now.Sub(c.started) >= 2*c.answerWindow()
	total := 0
	for _, v := range views {
		if v.LastHeartbeat.IsZero() && !warm {
			continue // not heard from yet: too early to call it unhealthy
		}
		total++
		m := v.member(c.answerWindow(), now)
		if m.Healthy || m.Restarting || planned[m.ID] {
			continue
		}
		if why, ok := countsForBreaker(v, m, now, c.answerWindow(), c.cfg.UnhealthyGrace); ok {
			counted[m.ID] = why
		}
	}
	unhealthy := len(counted)
	c.brkMu.Lock()
	defer c.brkMu.Unlock()
	defer c.breakerAlert(ctx, unhealthy, total, counted)
	if !c.brk.Observe(unhealthy, total, now) {
		if c.brkUnsaved {
			c.saveBreaker(ctx)
		}
		return
	}
	if st := c.brk.State(); !st.Open {
		c.alert(schema.SeverityInfo, "circuit_breaker_closed", "", "circuit breaker closed: the unhealthy count stayed under the threshold",
			map[string]any{"unhealthy": unhealthy, "total": total})
	}
	c.saveBreaker(ctx)
}

// breakerAlert tracks circuit_breaker_open: raised while the breaker is
// open (once: when it opens, or when a new leader finds it open and not
// alerted), resolved once it has closed, by itself or by an operator's
// reset (the circuit_breaker_closed info alert says which) even if this
// pass opened it again: that is a new episode, raised again. Held: brkMu.
func (c *Coordinator) breakerAlert(ctx context.Context, unhealthy, total int, counted map[string]string) {
	o := c.state.alerts
	closings, ready := c.brk.Closings(), c.conditionsReady(ctx)
	o.mu.Lock()
	closed := o.brkSeen && o.brkClosings != closings
	if ready { // else looked at again by the next pass
		o.brkClosings, o.brkSeen = closings, true
	}
	o.mu.Unlock()
	if closed {
		c.settle(ctx, schema.AlertBreakerOpen, "", "", func() (string, map[string]any) {
			return "circuit breaker closed: automatic restarts and rolls go on", map[string]any{"unhealthy": unhealthy, "total": total}
		})
	}
	open, reason := c.brk.Open()
	c.track(ctx, open, schema.AlertBreakerOpen, "", func() (string, map[string]any) {
		if open {
			return "circuit breaker open: automatic restarts and rolls stop: " + reason,
				map[string]any{"unhealthy": unhealthy, "total": total, "nodes": counted}
		}
		return "circuit breaker closed: automatic restarts and rolls go on", map[string]any{"unhealthy": unhealthy, "total": total}
	})
}

// State is the breaker as stored in ORCH_COORD and shown by cluster health.
func (b *Breaker) State() schema.BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := schema.BreakerState{Type: schema.TypeBreaker, Open: b.open, Reason: b.reason}
	if b.open {
		t := b.openedAt.UTC()
		st.OpenedAt = &t
	}
	return st
}

// saveBreaker stores the breaker's state for cluster health and the next
// leader; held: brkMu. One that fails is tried again by the next pass.
func (c *Coordinator) saveBreaker(ctx context.Context) error {
	err := c.state.putBreaker(ctx, c.brk.State())
	c.brkUnsaved = err != nil
	return err
}

// countsForBreaker says whether, and why, the breaker counts a node that is
// neither healthy nor being restarted: one unhealthy for the unhealthy grace
// (the wait the ladder gives it too), silent for the answer window plus that
// grace, or registered and never heard. A shorter blip counts for nothing: a
// NATS server partitioned for a few seconds silences the nodes on it until
// they notice and move to another server, and the breaker opened on that
// (found by the chaos suite).
func countsForBreaker(v NodeView, m Member, now time.Time, window, grace time.Duration) (string, bool) {
	switch {
	case v.LastHeartbeat.IsZero():
		return "never heard", true
	case !m.Answering && v.Heartbeat.Healthy:
		silent := now.Sub(v.LastHeartbeat)
		return fmt.Sprintf("silent for %s", silent.Round(time.Millisecond)), silent >= window+grace
	case !m.Answering:
		bad := now.Sub(v.UnhealthySince)
		return fmt.Sprintf("unhealthy for %s, then silent for %s", bad.Round(time.Millisecond),
			now.Sub(v.LastHeartbeat).Round(time.Millisecond)), bad >= grace
	}
	bad := now.Sub(v.UnhealthySince)
	return fmt.Sprintf("unhealthy for %s (phase %s)", bad.Round(time.Millisecond), cmp.Or(v.Heartbeat.Phase, "unknown")),
		bad >= grace
}

// answerWindow: a node heard from within this window is answering.
func (c *Coordinator) answerWindow() time.Duration {
	return time.Duration(c.cfg.MissedHeartbeats)*c.cfg.HeartbeatInterval + healthConfirm
}

package coordinator

import (
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
// and do not answer a health request: counted unavailable, alerted on, never
// restarted (a node that does not answer can only be waited for).
func (c *Coordinator) detect(ctx context.Context) {
	now := time.Now()
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
		c.alert(schema.SeverityCritical, "health_check_failed", id,
			fmt.Sprintf("node %s declared failed: no heartbeat for %s and no answer to health", id, silent.Round(time.Millisecond)),
			map[string]any{"last_heartbeat": v.LastHeartbeat.UTC(), "silent_seconds": schema.Secs(silent), "error": err.Error()})
	}
}

// breakerPass feeds the breaker the nodes unhealthy for reasons nobody
// planned (not those a roll or an operator is restarting).
func (c *Coordinator) breakerPass(ctx context.Context, planned map[string]bool) {
	now := time.Now()
	views := c.mem.snapshot()
	unhealthy := 0
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
		unhealthy++
	}
	if !c.brk.Observe(unhealthy, total, now) {
		return
	}
	open, reason := c.brk.Open()
	st := schema.BreakerState{Open: open, Reason: reason}
	if open {
		t := now.UTC()
		st.OpenedAt = &t
		c.alert(schema.SeverityCritical, "circuit_breaker_open", "", "circuit breaker open: automatic restarts and rolls stop: "+reason,
			map[string]any{"unhealthy": unhealthy, "total": total})
	} else {
		c.alert(schema.SeverityInfo, "circuit_breaker_closed", "", "circuit breaker closed: the unhealthy count stayed under the threshold",
			map[string]any{"unhealthy": unhealthy, "total": total})
	}
	_ = c.state.putBreaker(ctx, st)
}

// answerWindow: a node heard from within this window is answering.
func (c *Coordinator) answerWindow() time.Duration {
	return time.Duration(c.cfg.MissedHeartbeats)*c.cfg.HeartbeatInterval + healthConfirm
}

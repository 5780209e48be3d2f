package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// AlertRollPaused is the warning raised once per pause of a roll by the
// coordinator (not by an operator): it will not go on without a person,
// or not until its failed node is healthy again.
const AlertRollPaused = schema.AlertRollPaused

// pause records that r is paused, why and since when.
func (r *rollRecord) pause(reason, node, msg string, now time.Time) {
	r.State, r.Message = schema.RollPaused, msg
	r.PausedReason, r.PausedNode, r.PausedSince, r.RecoveredAt = reason, node, now.UTC(), nil
}

// unpause forgets the pause (the roll resumed or was aborted).
func (r *rollRecord) unpause() {
	r.PausedReason, r.PausedNode, r.PausedSince, r.RecoveredAt = "", "", time.Time{}, nil
}

// resume runs r again: the nodes whose restart failed go back in the queue,
// in their place of the order (retried, not skipped).
func (r *rollRecord) resume() {
	clear(r.Failed)
	r.unpause()
	r.State, r.Message = schema.RollRunning, ""
}

// alertPaused raises roll_paused for a pause the coordinator made; called
// once the pause is stored, so a pass that lost the write alerts nothing.
// Its fingerprint names the node that caused the pause (the roll, when
// none did); rollAlerts resolves it once the roll runs again or ends.
func (c *Coordinator) alertPaused(ctx context.Context, r *rollRecord) {
	c.raise(ctx, AlertRollPaused, r.PausedNode, r.ID, func() (string, map[string]any) {
		return "roll " + r.ID + " " + r.Message, map[string]any{"reason": r.PausedReason, "node": r.PausedNode}
	})
}

// rollAlerts resolves the roll_paused alerts of the rolls that are not
// paused any more: resumed (by the coordinator or an operator), completed,
// failed or aborted. A roll an operator paused after the coordinator did
// stays alerted until it runs again or ends.
func (c *Coordinator) rollAlerts(ctx context.Context, rolls []*rollRecord) {
	open := c.openWhere(func(cd condition) bool { return cd.Kind == AlertRollPaused })
	if len(open) == 0 {
		return
	}
	byID := make(map[string]*rollRecord, len(rolls))
	for _, r := range rolls {
		byID[r.ID] = r
	}
	for _, cd := range open {
		r := byID[cd.Roll]
		if r == nil || r.State == schema.RollPaused {
			continue // paused, or not read this pass
		}
		c.settle(ctx, AlertRollPaused, cd.Node, cd.Roll, func() (string, map[string]any) {
			return fmt.Sprintf("roll %s is %s: no longer paused", cd.Roll, r.State), map[string]any{"state": r.State}
		})
	}
}

// pausedRoll is the policy's view of r: quarantined says which of its
// failed nodes are quarantined.
func (r *rollRecord) pausedRoll(breakerOpen bool, quarantined map[string]bool) PausedRoll {
	p := PausedRoll{State: r.State, PausedReason: r.PausedReason, AutoResume: r.Request.AutoResume,
		MaxAutoResumes: r.Request.MaxAutoResumes, AutoResumes: r.AutoResumes,
		MinHealthyTime: schema.Seconds(r.Request.MinHealthyTime), BreakerOpen: breakerOpen}
	for _, id := range sortedKeys(r.Failed) {
		p.Failed = append(p.Failed, FailedNode{ID: id, Quarantined: quarantined[id], HealthySince: r.RecoveredAt[id]})
	}
	return p
}

// autoResume resumes a roll paused for a failed node once DecideResume
// says so. Only such a roll's failed nodes are asked their health: a roll
// paused for any other reason costs nothing here.
func (c *Coordinator) autoResume(ctx context.Context, r *rollRecord, now time.Time) error {
	open, _ := c.brk.Open()
	if ok, _ := MayAutoResume(r.pausedRoll(open, nil)); !ok {
		return nil
	}
	healthy, quarantined := map[string]bool{}, map[string]bool{}
	for id := range r.Failed {
		ns, _, _ := c.state.getNode(ctx, id)
		quarantined[id] = ns.Quarantined
		healthy[id] = !ns.Quarantined && c.nodeHealthy(ctx, id)
	}
	changed := r.observeRecovery(healthy, now)
	d := DecideResume(r.pausedRoll(open, quarantined), now)
	if !d.Resume {
		if changed {
			if d.After > 0 {
				time.AfterFunc(d.After, c.wake) // resumes on time rather than a tick later
			}
			return c.state.putRoll(ctx, r)
		}
		return nil
	}
	r.AutoResumes++
	r.resume()
	if err := c.state.putRoll(ctx, r); err != nil {
		return err
	}
	c.log.Info("roll resumed automatically", "roll", r.ID, "reason", d.Reason)
	c.event(r.ID, "resumed", map[string]any{"automatic": true, "reason": d.Reason, "auto_resumes": r.AutoResumes})
	c.wake()
	return nil
}

// observeRecovery starts or stops the recovery clock of each failed node
// of r from whether it is healthy now; it reports whether r changed.
func (r *rollRecord) observeRecovery(healthy map[string]bool, now time.Time) bool {
	changed := false
	for _, id := range sortedKeys(r.Failed) {
		_, seen := r.RecoveredAt[id]
		switch {
		case healthy[id] && !seen:
			if r.RecoveredAt == nil {
				r.RecoveredAt = map[string]time.Time{}
			}
			r.RecoveredAt[id], changed = now.UTC(), true
		case !healthy[id] && seen:
			delete(r.RecoveredAt, id) // flapped: the clock starts again
			changed = true
		}
	}
	return changed
}

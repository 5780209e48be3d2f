package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/schema"
)

// rollCurrent is the set of nodes running rolls have taken out.
func (c *Coordinator) rollCurrent() map[string]bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out := map[string]bool{}
	rolls, err := c.state.rolls(ctx)
	if err != nil {
		return out
	}
	for _, r := range rolls {
		if r.State == schema.RollRunning || r.State == schema.RollPaused {
			for id := range r.Current {
				out[id] = true
			}
		}
	}
	return out
}

func policyOf(req schema.RollRequest) RollPolicy {
	return RollPolicy{MaxUnavailable: req.MaxUnavailable, Canary: req.Canary,
		MinHealthyTime: schema.Seconds(req.MinHealthyTime), HealthyDeadline: schema.Seconds(req.HealthyDeadline)}
}

func (c *Coordinator) members(now time.Time) []Member {
	views := c.mem.snapshot()
	out := make([]Member, 0, len(views))
	for _, v := range views {
		m := v.member(c.answerWindow(), now)
		out = append(out, m)
	}
	return out
}

// withQuarantine marks quarantined members from the coordinator's state.
func (c *Coordinator) withQuarantine(ctx context.Context, ms []Member) []Member {
	for i := range ms {
		if ns, _, err := c.state.getNode(ctx, ms[i].ID); err == nil && ns.Quarantined {
			ms[i].Quarantined = true
		}
	}
	return ms
}

// planRoll makes a roll's plan from the live membership.
func (c *Coordinator) planRoll(ctx context.Context, req schema.RollRequest) (Plan, []string, error) {
	ms := c.withQuarantine(ctx, c.members(time.Now()))
	plan, blocked, err := MakePlan(ms, Selector{Group: req.Selector.Group, Nodes: req.Selector.Nodes}, policyOf(req))
	if err != nil {
		return plan, nil, schema.Invalid("selector", "%v", err)
	}
	if open, reason := c.brk.Open(); open {
		blocked = append(blocked, "circuit breaker open: "+reason)
	}
	return plan, blocked, nil
}

// newRollID names a roll whose caller named none.
func newRollID() string { return "roll-" + uuid.NewString()[:13] }

// startRoll records a new roll; the leader's passes run it. The record is
// created only if no roll has its id (KV create): of two starts with one
// id, the second gets jetstream.ErrKeyExists.
func (c *Coordinator) startRoll(ctx context.Context, req schema.RollRequest, term uint64) (*rollRecord, error) {
	plan, _, err := c.planRoll(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(plan.Waves) == 0 {
		return nil, schema.Invalid("selector", "every selected node is quarantined")
	}
	if req.RollID == "" {
		req.RollID = newRollID()
	}
	r := &rollRecord{ID: req.RollID, Request: req, Plan: plan, State: schema.RollRunning,
		Current: map[string]time.Time{}, HealthyAt: map[string]time.Time{}, Failed: map[string]string{},
		Durations: map[string]float64{}, StartedAt: time.Now().UTC(), Term: term}
	if err := c.state.putRoll(ctx, r); err != nil {
		return nil, err
	}
	c.event(r.ID, "started", map[string]any{"plan": plan.Waves, "request": req})
	return r, nil
}

// rollPass moves every running roll forward.
func (c *Coordinator) rollPass(ctx context.Context, term uint64) {
	c.rollMu.Lock()
	defer c.rollMu.Unlock()
	rolls, err := c.state.rolls(ctx)
	if err != nil {
		return
	}
	c.rollAlerts(ctx, rolls) // as stored: a change this pass makes is seen by the next
	for _, r := range rolls {
		// Paused and aborted rolls still see their nodes that are out through.
		if r.State == schema.RollRunning || ((r.State == schema.RollPaused || r.State == schema.RollAborted) && len(r.Current) > 0) {
			if err := c.advance(ctx, r, term); err != nil {
				c.passFailed(r, err)
				continue
			}
		}
		if r.State == schema.RollPaused {
			if err := c.autoResume(ctx, r, time.Now()); err != nil {
				c.passFailed(r, err)
			}
		}
	}
}

func (c *Coordinator) passFailed(r *rollRecord, err error) {
	if !errors.Is(err, context.Canceled) {
		c.log.Warn("roll pass", "roll", r.ID, "err", err)
	}
}

// restartID is the restart id of a roll's restart of a node: the same for
// every send of one try (a node answers a repeated id with the restart it
// made), a new one for each try after a failure, which a node would
// otherwise answer with the failed restart.
func (r *rollRecord) restartID(node string) string {
	if n := r.Retries[node]; n > 0 {
		return fmt.Sprintf("%s-%s-retry%d", r.ID, node, n)
	}
	return r.ID + "-" + node
}

// advance checks the nodes a roll has out, then takes out the next ones.
func (c *Coordinator) advance(ctx context.Context, r *rollRecord, term uint64) error {
	now := time.Now()
	pol := policyOf(r.Request)
	changed := false
	paused := false // by this pass: alerted once stored
	save := func() error {
		if err := c.state.putRoll(ctx, r); err != nil {
			return err
		}
		if paused {
			c.alertPaused(ctx, r)
		}
		return nil
	}
	canary := map[string]bool{}
	if r.Request.Canary > 0 && len(r.Plan.Waves) > 0 {
		for _, id := range r.Plan.Waves[0] {
			canary[id] = true
		}
	}
	for _, id := range sortedKeys(r.Current) {
		started := r.Current[id]
		key := r.restartID(id)
		c.mu.Lock()
		res, have := c.results[key]
		busy := c.inflight[key]
		c.mu.Unlock()
		deadline := started.Add(schema.Seconds(r.Request.Timeout) + pol.HealthyDeadline)
		var failure string
		switch {
		case !have && !busy:
			// Not sent by this leader (yet): the same restart id joins or
			// returns the restart a previous leader started.
			c.sendRollRestart(ctx, r, id, term)
		case have && !res.Success:
			failure = "restart failed: " + errString(nil, res)
		case have && r.Request.ConfigVersion != "" && res.State.ConfigVersion != r.Request.ConfigVersion:
			failure = fmt.Sprintf("node runs config_version %q after the restart, want %q", res.State.ConfigVersion, r.Request.ConfigVersion)
		case have:
			// Asked now rather than waiting for the next heartbeat (up to an
			// interval of overhead per node).
			healthy := c.nodeHealthy(ctx, id)
			hat, seen := r.HealthyAt[id]
			switch {
			case healthy && !seen:
				r.HealthyAt[id], changed = now.UTC(), true
				time.AfterFunc(pol.MinHealthyTime, c.wake)
			case healthy && now.Sub(hat) >= pol.MinHealthyTime:
				delete(r.Current, id)
				delete(r.HealthyAt, id)
				r.Done = append(r.Done, id)
				r.Durations[id] = res.Duration
				changed = true
				c.mu.Lock()
				delete(c.results, key)
				c.mu.Unlock()
				c.event(r.ID, "node_done", map[string]any{"node_id": id, "duration": res.Duration, "new_pid": res.NewPID})
			case !healthy && seen:
				delete(r.HealthyAt, id) // flapped: the clock starts again
				changed = true
			}
		}
		if failure == "" && now.After(deadline) {
			failure = fmt.Sprintf("not healthy within %s of its restart", deadline.Sub(started).Round(time.Second))
		}
		if failure != "" {
			delete(r.Current, id)
			r.Failed[id] = failure
			if r.Retries == nil {
				r.Retries = map[string]int{}
			}
			r.Retries[id]++ // its next try, after a resume, is a new restart
			c.mu.Lock()
			delete(c.results, key)
			c.mu.Unlock()
			changed = true
			c.event(r.ID, "node_failed", map[string]any{"node_id": id, "error": failure})
			switch {
			case r.State != schema.RollRunning:
				// Paused or aborted already: the failure is recorded, the state stays.
			case canary[id]:
				r.State, r.Message = schema.RollFailed, "canary "+id+" failed: "+failure+"; roll aborted"
				c.event(r.ID, "failed", map[string]any{"message": r.Message})
			default:
				r.pause(schema.PausedNodeFailed, id, "paused: "+id+" "+failure+"; the escalation ladder takes it over", now)
				paused = true
				c.event(r.ID, "paused", map[string]any{"message": r.Message, "reason": r.PausedReason, "node_id": id})
			}
		}
	}
	total := 0
	for _, w := range r.Plan.Waves {
		total += len(w)
	}
	if r.State == schema.RollRunning && len(r.Done) == total {
		r.State, r.Message, changed = schema.RollCompleted, fmt.Sprintf("%d nodes restarted", total), true
		c.event(r.ID, "completed", map[string]any{"done": total})
	}
	if r.State == schema.RollRunning {
		if open, reason := c.brk.Open(); open {
			// Paused, not held: the breaker says the fleet is in trouble, and
			// whether the roll should go on is a person's call (DECISIONS.md).
			r.pause(schema.PausedBreaker, "", "paused: circuit breaker open ("+reason+"); once it closes (or is reset), resume", now)
			changed, paused = true, true
			c.event(r.ID, "paused", map[string]any{"message": r.Message, "reason": r.PausedReason})
		} else {
			ms := c.withQuarantine(ctx, c.members(now))
			selected, err := Select(ms, Selector{Group: r.Request.Selector.Group, Nodes: r.Request.Selector.Nodes})
			if err == nil {
				pr := Progress{Done: setOf(r.Done), Current: r.Current, Failed: map[string]bool{}}
				step := Next(selected, r.Plan, pol, pr)
				if len(step.Start) == 0 && len(r.Current) == 0 {
					if stuck := c.stuckOn(ctx, selected, r, pol.HealthyDeadline, now); len(stuck) > 0 {
						// Nothing will free the budget by itself: pause and say why.
						r.pause(schema.PausedQuarantine, stuck[0], fmt.Sprintf("paused: blocked by %v (quarantined or declared failed); release or forget them, or raise max_unavailable, then resume", stuck), now)
						paused = true
						c.event(r.ID, "paused", map[string]any{"message": r.Message, "reason": r.PausedReason, "blocked_by": stuck})
						return save()
					}
				}
				if len(step.Start) > 0 {
					for _, id := range step.Start {
						r.Current[id] = now.UTC()
					}
					r.Message, changed = "", true
					// The roll record is the permit list: written (compare-and-set)
					// before any restart is sent.
					if err := c.state.putRoll(ctx, r); err != nil {
						return err
					}
					for _, id := range step.Start {
						c.event(r.ID, "node_started", map[string]any{"node_id": id})
						c.sendRollRestart(ctx, r, id, term)
					}
					return nil
				}
			}
		}
	}
	if changed {
		return save()
	}
	return nil
}

// sendRollRestart restarts one node of a roll, asynchronously; the result
// is picked up by the next pass.
func (c *Coordinator) sendRollRestart(ctx context.Context, r *rollRecord, id string, term uint64) {
	key := r.restartID(id)
	c.mu.Lock()
	if c.inflight[key] {
		c.mu.Unlock()
		return
	}
	c.inflight[key] = true
	c.mu.Unlock()
	req := schema.RestartRequest{Graceful: r.Request.Graceful, PreserveState: r.Request.PreserveState,
		Timeout: r.Request.Timeout, Reason: r.Request.Reason, RestartID: key}
	if r.Request.ConfigVersion != "" {
		req.Reason = schema.ReasonConfigurationUpdate
	}
	go func() {
		res, err := c.restart(context.WithoutCancel(ctx), id, req, term)
		defer c.wake()
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.inflight, key)
		var se *schema.Error
		switch {
		case err == nil:
			c.results[key] = res
		case errors.As(err, &se) && se.Code == schema.CodeRestartInProgress:
			// An operator's restart is under way: try again on a later pass.
		case errors.As(err, &se):
			c.results[key] = schema.RestartResult{NodeID: id, Error: se}
		default:
			// No answer (timeout, node gone): a later pass sends the same
			// restart id again, which joins or returns the restart.
			c.log.Warn("roll restart unanswered", "roll", r.ID, "node", id, "err", err)
		}
	}()
}

// stuckOn lists the selected nodes that block a roll and will not recover
// by themselves: unavailable and quarantined, or declared failed for longer
// than the roll's healthy deadline. A node declared failed a moment ago is
// often being restarted (by systemd, Docker or Kubernetes) and rejoins: the
// roll waits for it rather than pausing at once (found by the chaos suite).
func (c *Coordinator) stuckOn(ctx context.Context, selected []Member, r *rollRecord, grace time.Duration, now time.Time) []string {
	done := setOf(r.Done)
	var stuck []string
	blocking := 0
	for _, m := range selected {
		if !m.unavailable() || done[m.ID] {
			continue
		}
		blocking++
		v, _ := c.mem.get(m.ID)
		ns, _, _ := c.state.getNode(ctx, m.ID)
		if ns.Quarantined || (v.Failed && now.Sub(v.FailedAt) >= grace) {
			stuck = append(stuck, m.ID)
		}
	}
	if len(stuck) == 0 || len(stuck) < blocking {
		return nil // some blocker may still recover: wait
	}
	return stuck
}

// nodeHealthy asks a node's health now.
func (c *Coordinator) nodeHealthy(ctx context.Context, id string) bool {
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var h schema.Health
	err := c.conn.RequestJSON(hctx, schema.NodeSubject(id, schema.OpHealth), map[string]any{
		"include_reboot_readiness": false, "include_connection_status": false, "include_database_status": false}, nil, &h)
	if err == nil {
		c.mem.observe(id, h) // fresher than its last heartbeat, sent mid-restart
	}
	return err == nil && h.Healthy
}

func setOf(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// status renders a roll's record for the API.
func (r *rollRecord) status() *schema.RollStatus {
	total := 0
	for _, w := range r.Plan.Waves {
		total += len(w)
	}
	st := &schema.RollStatus{Type: schema.TypeRollStatus, RollID: r.ID, State: r.State, Done: len(r.Done), Total: total,
		Current: sortedKeys(r.Current), Failed: sortedKeys(r.Failed), StartedAt: r.StartedAt,
		Plan: schema.PlanWaves{Waves: r.Plan.Waves}, Message: r.Message, Request: r.Request, Term: r.Term}
	if st.Current == nil {
		st.Current = []string{}
	}
	st.AutoResumes = r.AutoResumes
	if r.State == schema.RollPaused {
		st.PausedReason = r.PausedReason
		if !r.PausedSince.IsZero() {
			t := r.PausedSince
			st.PausedSince = &t
		}
	}
	for _, id := range r.Done {
		st.Nodes = append(st.Nodes, schema.RollNode{NodeID: id, Phase: schema.PhaseComplete, Duration: r.Durations[id]})
	}
	for _, id := range st.Current {
		t := r.Current[id]
		n := schema.RollNode{NodeID: id, StartedAt: &t}
		if h, ok := r.HealthyAt[id]; ok {
			n.HealthyAt = &h
		}
		st.Nodes = append(st.Nodes, n)
	}
	for _, id := range st.Failed {
		st.Nodes = append(st.Nodes, schema.RollNode{NodeID: id, Phase: schema.PhaseFailed, Error: r.Failed[id]})
	}
	if r.State == schema.RollRunning && len(r.Done) > 0 && total > len(r.Done) {
		per := time.Since(r.StartedAt) / time.Duration(len(r.Done))
		eta := time.Now().Add(per * time.Duration(total-len(r.Done))).UTC()
		st.ETA = &eta
	}
	return st
}

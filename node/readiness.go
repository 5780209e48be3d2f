package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// activeTasksCheck measures shutdown.prepare's active_tasks: a drain stops
// every job at a step boundary, waiting up to suspendTimeout for the step
// in flight and abandoning (to run again after the restart) one that ends
// later. So the tasks are suspendable when every running step ends within
// suspendTimeout from now; tasks without a running step (client-driven
// ones, jobs between steps) are at a boundary already. Pure: the reading
// and now in, the check out.
func activeTasksCheck(st *workerStats, fresh bool, suspendTimeout time.Duration, now time.Time) *schema.ActiveTasksCheck {
	c := &schema.ActiveTasksCheck{Count: st.ActiveTasks}
	if !fresh {
		c.Status, c.Reason = "unknown", "worker not answering: its jobs cannot be measured"
		return c
	}
	ids := make([]string, 0, len(st.StepEnds))
	for id := range st.StepEnds {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var late []string
	var wait time.Duration
	for _, id := range ids {
		left := max(st.StepEnds[id].Sub(now), 0)
		if left > suspendTimeout {
			late = append(late, fmt.Sprintf("%s (step ends in %.1fs)", id, left.Seconds()))
		}
		wait = max(wait, left)
	}
	switch {
	case len(late) > 0:
		c.Status = "waiting"
		c.Reason = fmt.Sprintf("%d job(s) would be stopped mid-step (the suspend timeout is %s; the step runs again after the restart): %v",
			len(late), suspendTimeout, late)
	case len(ids) > 0:
		c.Suspendable, c.Status = true, "ready"
		c.Reason = fmt.Sprintf("%d job(s) reach a step boundary within %.1fs", len(ids), wait.Seconds())
	default:
		c.Suspendable, c.Status = true, "ready"
	}
	return c
}

// reconnections reads the node's closed reconnection windows from
// ORCH_EVENTS.
func (s *Supervisor) reconnections(ctx context.Context) ([]schema.ReconnectionOutcome, error) {
	var out []schema.ReconnectionOutcome
	err := s.bs.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject(s.cfg.NodeID, schema.EventReconnection), func(data []byte) error {
		var o schema.ReconnectionOutcome
		if json.Unmarshal(data, &o) == nil {
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// sumReconnections fills r's counts from the stored windows and the
// serving worker's (live: its clients back so far and those already
// failed; a closed one counts once, from the store when it is there
// already). It returns the seconds the successful ones took.
func sumReconnections(r *schema.ReconnectionStats, stored []schema.ReconnectionOutcome, live *reconnectReading) float64 {
	var secs float64
	liveStored := false
	for _, o := range stored {
		r.SuccessfulReconnections += o.Reconnected
		r.FailedReconnections += o.Failed
		secs += o.Seconds
		if live != nil && o.ReadyAt.Equal(live.ReadyAt) && o.RestartID == live.RestartID {
			liveStored = true
		}
	}
	if live != nil && !liveStored {
		r.SuccessfulReconnections += live.Reconnected
		r.FailedReconnections += live.Failed
		secs += live.Seconds
	}
	return secs
}

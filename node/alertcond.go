package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/restartcoord/restartcoord/schema"
)

// conditions are the node's alert conditions that are open: fired and not
// yet resolved. Each condition fires once when it begins (raise) and is
// resolved once when it clears (settle), so a receiver grouping alerts by
// fingerprint (kind and node) opens one incident per episode and closes it.
// A node has one condition per kind.
//
// They live in memory. A supervisor that starts again takes up what it can
// derive (openFromStore): the restart kinds from its restart history, a
// state_size from its newest snapshot. buffer_capacity, backup_age and
// log_size start closed: one that still holds is raised again (the same
// fingerprint), and one that cleared while no supervisor ran is not
// resolved.
type conditions struct {
	mu   sync.Mutex
	open map[string]bool // kind -> open
}

// turn marks kind open (or closed) and reports whether that changed it.
func (c *conditions) turn(kind string, open bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[kind] == open {
		return false
	}
	if c.open == nil {
		c.open = map[string]bool{}
	}
	if open {
		c.open[kind] = true
	} else {
		delete(c.open, kind)
	}
	return true
}

// isOpen reports whether kind is open.
func (c *conditions) isOpen(kind string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open[kind]
}

// raise fires kind at its severity unless it is open already.
func (s *Supervisor) raise(kind, msg string, details map[string]any) {
	if s.conds.turn(kind, true) {
		s.alert(schema.AlertKinds[kind], kind, msg, details)
	}
}

// settle resolves kind if it is open.
func (s *Supervisor) settle(kind, msg string, details map[string]any) {
	if s.conds.turn(kind, false) {
		s.resolveAlert(kind, msg, details)
	}
}

// openFromStore takes up, at start, the conditions a previous supervisor
// of this node left open, from what is stored: its last restart failed
// (restart_failed), its last restart that measured its state lost tasks
// (state_loss), its last successful restart was slow (slow_restart), its
// newest snapshot is above the maximum (state_size). Nothing is published:
// they were alerted when they began.
func (s *Supervisor) openFromStore(ctx context.Context) {
	failed, loss, slow, seenOK, seenMeasured := false, false, false, false, false
	s.hist.mu.Lock()
	for i := len(s.hist.entries) - 1; i >= 0; i-- {
		r := s.hist.entries[i]
		if i == len(s.hist.entries)-1 {
			failed = !r.Success
		}
		if r.Success && !seenOK {
			seenOK, slow = true, r.Duration > s.cfg.SlowRestart.Seconds()
		}
		if measuredState(r) && !seenMeasured {
			seenMeasured, loss = true, r.State.TasksRestored < r.State.TasksSaved
		}
	}
	s.hist.mu.Unlock()
	s.conds.turn(schema.AlertRestartFailed, failed)
	s.conds.turn(schema.AlertStateLoss, loss)
	s.conds.turn(schema.AlertSlowRestart, slow)
	if list, err := s.bs.ListSnapshots(ctx, s.cfg.NodeID); err == nil && len(list) > 0 {
		s.conds.turn(schema.AlertStateSize, list[0].SizeBytes > s.cfg.MaxStateSize)
	}
}

// measuredState: a successful restart that wrote a snapshot and restarted
// on it (not a rollback to an older one), so what it restored can be set
// against what it saved.
func measuredState(r schema.RestartResult) bool {
	return r.Success && r.State.SnapshotWritten && r.State.Preserved
}

// restartConditions raises or resolves, from a finished restart,
// restart_failed (resolved by the next successful restart), state_loss
// (judged on restarts that measured their state: resolved by the next one
// that restored every task it saved) and slow_restart (judged on
// successful restarts: resolved by the next one under SlowRestart). A
// failed restart says nothing of the other two.
func (s *Supervisor) restartConditions(r schema.RestartResult) {
	id := r.RestartID
	if !r.Success {
		s.raise(schema.AlertRestartFailed, r.Message, map[string]any{"restart_id": id, "errors": r.Errors})
		return
	}
	s.settle(schema.AlertRestartFailed, fmt.Sprintf("restart %s of %s succeeded", id, s.cfg.NodeID),
		map[string]any{"restart_id": id})
	if st := r.State; measuredState(r) {
		if st.TasksRestored < st.TasksSaved {
			s.raise(schema.AlertStateLoss, fmt.Sprintf("restart %s saved %d tasks and restored %d", id, st.TasksSaved, st.TasksRestored),
				map[string]any{"restart_id": id, "tasks_saved": st.TasksSaved, "tasks_restored": st.TasksRestored})
		} else {
			s.settle(schema.AlertStateLoss, fmt.Sprintf("restart %s restored all %d tasks it saved", id, st.TasksSaved),
				map[string]any{"restart_id": id, "tasks_saved": st.TasksSaved, "tasks_restored": st.TasksRestored})
		}
	}
	limit := s.cfg.SlowRestart.Seconds()
	details := map[string]any{"restart_id": id, "duration": r.Duration, "threshold_seconds": limit}
	if r.Duration > limit {
		s.raise(schema.AlertSlowRestart, fmt.Sprintf("restart took %.1fs (over %gs)", r.Duration, limit), details)
	} else {
		s.settle(schema.AlertSlowRestart, fmt.Sprintf("restart %s took %.1fs (under %gs)", id, r.Duration, limit), details)
	}
}

// snapshotEvent is what a worker tells its supervisor of each snapshot it
// writes, for state_size.
type snapshotEvent struct {
	SnapshotID   string `json:"snapshot_id"`
	Trigger      string `json:"trigger"`
	SizeBytes    int64  `json:"size_bytes"`
	MaxStateSize int64  `json:"max_state_size"`
}

// snapshotTaken raises state_size for a snapshot above the maximum and
// resolves it with the next one under it.
func (s *Supervisor) snapshotTaken(ev snapshotEvent) {
	details := map[string]any{"snapshot_id": ev.SnapshotID, "trigger": ev.Trigger, "size_bytes": ev.SizeBytes,
		"max_state_size": ev.MaxStateSize}
	if ev.SizeBytes > ev.MaxStateSize {
		s.raise(schema.AlertStateSize, fmt.Sprintf("state of %s is %d bytes, above %d", s.cfg.NodeID, ev.SizeBytes, ev.MaxStateSize), details)
		return
	}
	s.settle(schema.AlertStateSize, fmt.Sprintf("state of %s is %d bytes again, under %d", s.cfg.NodeID, ev.SizeBytes, ev.MaxStateSize), details)
}

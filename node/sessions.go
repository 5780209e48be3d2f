package node

import (
	"context"
	"slices"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// cleanupSessions expires, every CleanupInterval, the sessions idle longer
// than SessionIdle that have nothing waiting in the buffer. Each expiry is
// journaled, so it survives restarts like any other change.
func (w *worker) cleanupSessions(ctx context.Context) {
	w.every(ctx, w.env.CleanupInterval, func() {
		if n, err := w.expireIdleSessions(ctx); err != nil {
			w.log.Warn("session cleanup", "err", err)
		} else if n > 0 {
			w.log.Info("expired idle sessions", "count", n)
		}
	})
}

func (w *worker) expireIdleSessions(ctx context.Context) (int, error) {
	depths, err := w.bs.BufferDepths(ctx, w.env.NodeID)
	if err != nil {
		return 0, err
	}
	cut := time.Now().Add(-w.env.SessionIdle)
	w.st.commitMu.Lock()
	defer w.st.commitMu.Unlock()
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	var idle []string
	for id, x := range w.st.sessions {
		if x.LastActivity.Before(cut) && depths[x.ClientID] == 0 {
			idle = append(idle, id)
		}
	}
	slices.Sort(idle)
	for _, id := range idle {
		if err := w.st.commitLocked(ctx, "", &schema.JournalEntry{Op: schema.JournalSessionExpire, ExpiredSession: id}); err != nil {
			return 0, err
		}
	}
	return len(idle), nil
}

package node

import (
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// shutdown.prepare's active_tasks is measured from the steps in flight: a
// drain waits SuspendTimeout for a step boundary and abandons a step that
// ends later, so such a step makes the tasks not suspendable.
func TestActiveTasksCheck(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	const timeout = 5 * time.Second
	for _, c := range []struct {
		name        string
		st          workerStats
		fresh       bool
		suspendable bool
		status      string
		reason      string // a part of the reason; "" = none
	}{
		{"no jobs running", workerStats{ActiveTasks: 3}, true, true, "ready", ""},
		{"a step ends within the timeout", workerStats{ActiveTasks: 2, StepEnds: map[string]time.Time{"t1": now.Add(2 * time.Second)}},
			true, true, "ready", "within 2.0s"},
		{"a step already due", workerStats{ActiveTasks: 1, StepEnds: map[string]time.Time{"t1": now.Add(-time.Second)}},
			true, true, "ready", "within 0.0s"},
		{"a step ends after the timeout", workerStats{ActiveTasks: 2, StepEnds: map[string]time.Time{
			"t1": now.Add(time.Second), "t2": now.Add(40 * time.Second)}}, true, false, "waiting", "t2 (step ends in 40.0s)"},
		{"exactly at the timeout", workerStats{ActiveTasks: 1, StepEnds: map[string]time.Time{"t1": now.Add(timeout)}},
			true, true, "ready", ""},
		{"worker not answering", workerStats{ActiveTasks: 1}, false, false, "unknown", "not answering"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := activeTasksCheck(&c.st, c.fresh, timeout, now)
			if got.Count != c.st.ActiveTasks || got.Suspendable != c.suspendable || got.Status != c.status || !strings.Contains(got.Reason, c.reason) {
				t.Errorf("got %+v, want count %d suspendable %v status %s reason containing %q", got, c.st.ActiveTasks, c.suspendable, c.status, c.reason)
			}
		})
	}
}

// The node's reconnection figures are the stored windows plus the serving
// worker's, the latter once even when it is stored already.
func TestSumReconnections(t *testing.T) {
	ready := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	stored := []schema.ReconnectionOutcome{
		{RestartID: "r1", ReadyAt: ready.Add(-time.Hour), Reconnected: 3, Failed: 1, Seconds: 0.9},
		{RestartID: "r2", ReadyAt: ready, Reconnected: 2, Failed: 0, Seconds: 0.4},
	}
	for _, c := range []struct {
		name        string
		stored      []schema.ReconnectionOutcome
		live        *reconnectReading
		back, fails int
		secs        float64
	}{
		{"nothing yet", nil, nil, 0, 0, 0},
		{"live window open", stored[:1], &reconnectReading{RestartID: "r2", ReadyAt: ready, Reconnected: 1, Pending: []string{"c"}, Seconds: 0.2}, 4, 1, 1.1},
		{"live window stored already", stored, &reconnectReading{RestartID: "r2", ReadyAt: ready, Reconnected: 2, Closed: true, Seconds: 0.4}, 5, 1, 1.3},
		{"live window closed, not stored yet", stored[:1], &reconnectReading{RestartID: "r2", ReadyAt: ready, Reconnected: 2, Failed: 2, Closed: true, Seconds: 0.4}, 5, 3, 1.3},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r schema.ReconnectionStats
			secs := sumReconnections(&r, c.stored, c.live)
			if r.SuccessfulReconnections != c.back || r.FailedReconnections != c.fails || secs < c.secs-1e-9 || secs > c.secs+1e-9 {
				t.Errorf("got %d back %d failed %.3f s, want %d %d %.3f", r.SuccessfulReconnections, r.FailedReconnections, secs, c.back, c.fails, c.secs)
			}
		})
	}
}

// One restart's reconnection window: the clients active before the
// restart, each back within the window or failed (late, expired, or never
// back); an interrupted window's clients carried into the next once.
func TestReconnectWindow(t *testing.T) {
	now := time.Now()
	restartAt := now.Add(-10 * time.Second)
	sessions := func(ids ...string) map[string]*schema.Session {
		m := map[string]*schema.Session{}
		for _, id := range ids {
			m[id] = &schema.Session{SessionID: id, ClientID: id, LastActivity: restartAt.Add(-5 * time.Second)}
		}
		// idle: its last request long before the restart; not counted.
		m["idle"] = &schema.Session{SessionID: "idle", ClientID: "idle", LastActivity: restartAt.Add(-2 * time.Minute)}
		return m
	}
	newWorker := func(readyAgo time.Duration, carry *reconnectReading, ids ...string) *worker {
		w := &worker{env: workerEnv{NodeID: "n1", RestartID: "r2", ReconnectWindow: time.Minute, RestartStartedAt: restartAt,
			ReconnectCarry: carry}, st: &store{sessions: sessions(ids...)}, startedAt: restartAt}
		w.openReconnect()
		w.readyAt = now.Add(-readyAgo)
		return w
	}
	t.Run("back in time, late, expired, never", func(t *testing.T) {
		w := newWorker(time.Second, nil, "a", "b", "c", "d")
		// a's request was sent while the node was down: timed from ready.
		if secs, ok := w.reconnectAnswered("a", w.readyAt.Add(-time.Second)); !ok || secs < 0.9 || secs > 5 {
			t.Errorf("a back 1 s after ready: got %v s in time %v", secs, ok)
		}
		if _, ok := w.reconnectAnswered("a", now); ok {
			t.Error("a's second request counted again")
		}
		if _, ok := w.reconnectAnswered("idle", now); ok {
			t.Error("a client idle before the restart counted")
		}
		w.reconnectExpired("b")
		w.readyAt = now.Add(-61 * time.Second) // c answers after the window
		if _, ok := w.reconnectAnswered("c", now); ok {
			t.Error("c, back after 61 s, counted in time")
		}
		out := w.closeReconnect(now) // d never came back
		if out == nil || out.Expected != 4 || out.Reconnected != 1 || out.Failed != 3 || out.RestartID != "r2" ||
			strings.Join(out.FailedClients, ",") != "b,c,d" {
			t.Fatalf("outcome %+v, want 1 of 4 back, b c d failed", out)
		}
		if again := w.closeReconnect(now); again != nil {
			t.Errorf("closed twice: %+v", again)
		}
	})
	t.Run("nobody to come back records nothing", func(t *testing.T) {
		w := newWorker(time.Second, nil)
		if out := w.closeReconnect(now); out != nil {
			t.Errorf("outcome %+v for a restart without active clients", out)
		}
	})
	t.Run("an interrupted window is carried once", func(t *testing.T) {
		// The previous worker: a back, b and e pending (e's session is gone
		// since), x failed; the new worker has a and b active too.
		carry := &reconnectReading{RestartID: "r1", Reconnected: 1, Failed: 1, Seconds: 0.5, FailedClients: []string{"x"},
			Pending: []string{"b", "e"}}
		w := newWorker(time.Second, carry, "a", "b")
		if got := len(w.recon.pending); got != 2 {
			t.Fatalf("pending %v, want a and b once", w.recon.pending)
		}
		w.reconnectAnswered("a", now)
		out := w.closeReconnect(now)
		if out == nil || out.Reconnected != 2 || out.Failed != 2 || strings.Join(out.FailedClients, ",") != "b,x" {
			t.Fatalf("outcome %+v, want 2 back (one carried), b and x failed", out)
		}
	})
}

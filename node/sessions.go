package node

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
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

// reconnectReading is a worker's reconnection window as its stats carry
// it, and as the next worker is handed it when this one ends before the
// window closed.
type reconnectReading struct {
	RestartID     string    `json:"restart_id,omitempty"`
	ReadyAt       time.Time `json:"ready_at"`
	Pending       []string  `json:"pending,omitempty"`
	Reconnected   int       `json:"reconnected"`
	Failed        int       `json:"failed"`
	Seconds       float64   `json:"seconds"`
	FailedClients []string  `json:"failed_clients,omitempty"`
	Closed        bool      `json:"closed"`
}

// sessionActiveWindow: a session with a request this recently is an
// active connection (the contract's connections.active_connections).
const sessionActiveWindow = 60 * time.Second

// maxFailedClients bounds the client ids an outcome names.
const maxFailedClients = 100

// reconnect is the reconnection window of the restart that started this
// worker: the clients with a session active (a request in the 60 s) before
// the restart began, each either back within the window
// after the worker is ready or failed. Counting per restart, and
// publishing each closed window in ORCH_EVENTS, is what keeps the counts
// across worker restarts: a new worker starts its own window, and the
// node's and the report's figures are sums of the published windows. A
// window that a further restart interrupts is carried into the next one
// (ReconnectCarry), so its clients are neither lost nor counted twice.
// Held: worker.mu.
type reconnect struct {
	restartID   string
	pending     map[string]bool
	reconnected int
	failed      int
	seconds     float64
	failedIDs   []string
	closed      bool
}

// carryStored says whether the previous worker's window, handed over as
// unclosed, was in fact closed and stored: the supervisor's reading can
// predate a close made just before that worker ended. The previous worker
// is gone by now, so what it stored is all it will store.
func (w *worker) carryStored(ctx context.Context) (bool, error) {
	c := w.env.ReconnectCarry
	if c == nil || c.Closed {
		return false, nil
	}
	stored := false
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{schema.NodeEventSubject(w.env.NodeID, schema.EventReconnection)},
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy}
	err := bus.ReadAll(ctx, w.bs.JetStream(), schema.StreamEvents, cfg, func(m jetstream.Msg) error {
		var o schema.ReconnectionOutcome
		if json.Unmarshal(m.Data(), &o) == nil && o.RestartID == c.RestartID && o.ReadyAt.Equal(c.ReadyAt) {
			stored = true
		}
		return nil
	})
	return stored, err
}

// openReconnect starts the window from the restored sessions (st.mu held
// by nobody else: called during start) and what the previous worker left.
func (w *worker) openReconnect() {
	cut := w.env.RestartStartedAt
	if cut.IsZero() {
		cut = w.startedAt
	}
	cut = cut.Add(-sessionActiveWindow)
	r := &w.recon
	r.restartID, r.pending = w.env.RestartID, map[string]bool{}
	for _, x := range w.st.sessions {
		if !x.LastActivity.Before(cut) {
			r.pending[x.ClientID] = true
		}
	}
	if c := w.env.ReconnectCarry; c != nil && !c.Closed {
		for _, id := range c.Pending {
			if _, ok := w.st.sessions[id]; ok {
				r.pending[id] = true
			}
		}
		r.reconnected, r.failed, r.seconds = c.Reconnected, c.Failed, c.Seconds
		r.failedIDs = append(r.failedIDs, c.FailedClients...)
	}
}

// reconnectAnswered records that client's first answered request since
// the restart (worker.mu held); it returns the seconds it took and whether
// it came back in time.
func (w *worker) reconnectAnswered(client string, published time.Time) (float64, bool) {
	r := &w.recon
	if !r.pending[client] {
		return 0, false
	}
	delete(r.pending, client)
	// Requests taken before ready (the buffer opens just before) count
	// from when they were sent.
	from := w.readyAt
	if from.IsZero() || published.After(from) {
		from = published
	}
	secs := max(time.Since(from), 0).Seconds()
	if !w.readyAt.IsZero() && time.Since(w.readyAt) > w.env.ReconnectWindow {
		w.reconnectFailed(client)
		return secs, false
	}
	r.reconnected++
	r.seconds += secs
	w.closeReconnectIfDone()
	return secs, true
}

// reconnectExpired: client's request waited past the buffer expiration, so
// it did not come back in time (worker.mu held).
func (w *worker) reconnectExpired(client string) {
	if w.recon.pending[client] {
		delete(w.recon.pending, client)
		w.reconnectFailed(client)
		w.closeReconnectIfDone()
	}
}

func (w *worker) reconnectFailed(client string) {
	w.recon.failed++
	if len(w.recon.failedIDs) < maxFailedClients {
		w.recon.failedIDs = append(w.recon.failedIDs, client)
	}
}

// closeReconnectIfDone publishes the window once every client is settled,
// without waiting out the window (worker.mu held).
func (w *worker) closeReconnectIfDone() {
	if len(w.recon.pending) == 0 && !w.recon.closed && !w.readyAt.IsZero() {
		w.publishClosed()
	}
}

// publishClosed closes the window and publishes its outcome in the
// background (worker.mu held).
func (w *worker) publishClosed() {
	if out := w.closeReconnect(time.Now()); out != nil {
		w.reconPub.Add(1)
		go func() {
			defer w.reconPub.Done()
			w.publishReconnection(*out)
		}()
	}
}

// waitReconnectionStored waits, up to d, for outcomes being stored: a
// drained worker exits, and the supervisor's reading already says the
// window is closed, so an outcome lost here would be counted nowhere.
func (w *worker) waitReconnectionStored(d time.Duration) {
	done := make(chan struct{})
	go func() { w.reconPub.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		w.log.Warn("exiting with a reconnection outcome not stored yet")
	}
}

// closeReconnect settles the window at now: clients not back failed
// (worker.mu held). It returns the outcome to keep; nil when already
// closed or when there was nobody to come back.
func (w *worker) closeReconnect(now time.Time) *schema.ReconnectionOutcome {
	r := &w.recon
	if r.closed {
		return nil
	}
	r.closed = true
	ids := make([]string, 0, len(r.pending))
	for id := range r.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w.reconnectFailed(id)
	}
	clear(r.pending)
	if r.reconnected+r.failed == 0 {
		return nil // nobody to come back: nothing to record
	}
	failed := slices.Clone(r.failedIDs)
	slices.Sort(failed)
	out := schema.ReconnectionOutcome{Type: schema.TypeReconnectionOutcome, NodeID: w.env.NodeID, RestartID: r.restartID,
		ReadyAt: w.readyAt.UTC(), ClosedAt: now.UTC(), Window: w.env.ReconnectWindow.Seconds(),
		Expected: r.reconnected + r.failed, Reconnected: r.reconnected, Failed: r.failed,
		Seconds: r.seconds, FailedClients: failed}
	return &out
}

// publishReconnection keeps an outcome in ORCH_EVENTS, retrying while
// JetStream does not answer, for at most a minute: the counts are the
// report's, and a worker is never held up by them.
func (w *worker) publishReconnection(out schema.ReconnectionOutcome) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := retryJournal(ctx, func() error {
		actx, c := context.WithTimeout(ctx, 5*time.Second)
		defer c()
		return w.bs.PublishDurable(actx, schema.NodeEventSubject(w.env.NodeID, schema.EventReconnection), out)
	})
	if err != nil {
		w.log.Error("reconnection outcome not stored", "restart", out.RestartID, "err", err)
	}
}

// reconnectDeadline closes the window ReconnectWindow after ready.
func (w *worker) reconnectDeadline(ctx context.Context) {
	t := time.NewTimer(w.env.ReconnectWindow)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-w.drained:
		return
	case <-t.C:
	}
	w.mu.Lock()
	w.publishClosed()
	w.mu.Unlock()
}

// reconnectReadingLocked is the window as stats carry it (worker.mu held).
func (w *worker) reconnectReadingLocked() *reconnectReading {
	r := &w.recon
	out := &reconnectReading{RestartID: r.restartID, ReadyAt: w.readyAt, Reconnected: r.reconnected, Failed: r.failed,
		Seconds: r.seconds, Closed: r.closed}
	if !r.closed {
		out.FailedClients = slices.Clone(r.failedIDs)
		for id := range r.pending {
			out.Pending = append(out.Pending, id)
		}
		slices.Sort(out.Pending)
	}
	return out
}

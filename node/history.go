package node

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// history is the node's restart history: kept in ORCH_EVENTS (subject
// orch.v1.evt.node.<id>.restart_result), read once at start, then appended.
type history struct {
	mu      sync.Mutex
	nodeID  string
	entries []schema.RestartResult
	ids     map[string]int
}

func loadHistory(ctx context.Context, bs *bus.Store, nodeID string) (*history, error) {
	h := &history{nodeID: nodeID, ids: map[string]int{}}
	err := bs.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject(nodeID, schema.EventRestartResult), func(data []byte) error {
		var r schema.RestartResult
		if json.Unmarshal(data, &r) == nil {
			h.add(r)
		}
		return nil
	})
	return h, err
}

func (h *history) add(r schema.RestartResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids[r.RestartID] = len(h.entries)
	h.entries = append(h.entries, r)
}

// record keeps a result in memory and durably (retrying while NATS is away).
func (h *history) record(ctx context.Context, bs *bus.Store, r schema.RestartResult) {
	h.add(r)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = retryJournal(rctx, func() error {
		actx, c := context.WithTimeout(rctx, 5*time.Second)
		defer c()
		// Keyed by the restart id (each restart has its own; a repeated id
		// returns the recorded result, never a new one): a try that landed
		// unacknowledged and is tried again stores the result once.
		subj := schema.NodeEventSubject(h.nodeID, schema.EventRestartResult)
		if r.RestartID == "" {
			return bs.PublishDurable(actx, subj, r)
		}
		return bs.PublishDurableOnce(actx, subj, h.nodeID+":result:"+r.RestartID, r)
	})
}

func (h *history) byID(id string) (schema.RestartResult, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, ok := h.ids[id]
	if !ok {
		return schema.RestartResult{}, false
	}
	return h.entries[i], true
}

// expectedDuration estimates a restart from the last successful ones.
func (h *history) expectedDuration() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var sum float64
	n := 0
	for i := len(h.entries) - 1; i >= 0 && n < 10; i-- {
		if h.entries[i].Success {
			sum += h.entries[i].Duration
			n++
		}
	}
	if n == 0 {
		return 2 * time.Second
	}
	return schema.Seconds(sum / float64(n))
}

// status builds restart.status's history: the most recent first.
func (h *history) status(limit int, details bool) *schema.History {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := &schema.History{RecentRestarts: []schema.HistoryEntry{}, TotalRestarts: len(h.entries)}
	for i := len(h.entries) - 1; i >= 0; i-- {
		r := h.entries[i]
		at := r.CompletedAt
		if r.Success && out.LastSuccessfulRestart == nil {
			out.LastSuccessfulRestart = &at
		}
		if !r.Success && out.LastFailedRestart == nil {
			out.LastFailedRestart = &at
		}
		if len(out.RecentRestarts) < limit {
			e := schema.HistoryEntry{RestartID: r.RestartID, Timestamp: r.StartedAt, Reason: r.Reason, Graceful: r.Graceful,
				Success: r.Success, Duration: r.Duration, OldPID: r.OldPID, NewPID: r.NewPID}
			if details {
				e.Errors = slices.Clone(r.Errors)
				if r.Error != nil {
					e.Errors = append(e.Errors, r.Error.Message)
				}
			} else {
				n := len(r.Errors)
				e.ErrorCount = &n
			}
			out.RecentRestarts = append(out.RecentRestarts, e)
		}
	}
	return out
}

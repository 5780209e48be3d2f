package coordinator

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// HistoryRequest is the body of cluster.history.
type HistoryRequest struct {
	NodeID string        `json:"node_id,omitempty"`
	Reason schema.Reason `json:"reason,omitempty"`
	Since  *time.Time    `json:"since,omitempty"`
	Limit  int           `json:"limit"`
}

// Validate implements schema.Validator.
func (r *HistoryRequest) Validate() error {
	if r.NodeID != "" && !schema.ValidToken(r.NodeID) {
		return schema.Invalid("node_id", "node_id %q is not a valid token", r.NodeID)
	}
	if r.Reason != "" && !r.Reason.Valid() {
		return schema.Invalid("reason", "unknown reason %q", r.Reason)
	}
	if r.Limit < 1 || r.Limit > 10000 {
		return schema.Invalid("limit", "limit must be 1..10000, got %d", r.Limit)
	}
	return nil
}

type historyFilter struct {
	node   string
	reason schema.Reason
	since  time.Time
}

// history reads restart results of every node from ORCH_EVENTS, oldest
// first. It waits for JetStream (an election) up to historyWait: a handler's
// context has no deadline of its own.
func (c *Coordinator) history(ctx context.Context, f historyFilter) ([]schema.RestartResult, error) {
	ctx, cancel := context.WithTimeout(ctx, historyWait)
	defer cancel()
	node := "*"
	if f.node != "" {
		node = f.node
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{schema.NodeEventSubject(node, schema.EventRestartResult)}}
	if !f.since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.since
	}
	var out []schema.RestartResult
	err := bus.ReadAll(ctx, c.bs.JetStream(), schema.StreamEvents, cfg, func(m jetstream.Msg) error {
		var r schema.RestartResult
		if json.Unmarshal(m.Data(), &r) == nil && (f.reason == "" || r.Reason == f.reason) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

const historyWait = 20 * time.Second

// HistoryEntry is one restart of cluster.history.
type HistoryEntry struct {
	RestartID   string        `json:"restart_id"`
	NodeID      string        `json:"node_id"`
	Reason      schema.Reason `json:"reason"`
	Graceful    bool          `json:"graceful"`
	Success     bool          `json:"success"`
	Duration    float64       `json:"duration"`
	StartedAt   time.Time     `json:"started_at"`
	CompletedAt time.Time     `json:"completed_at"`
	RollID      string        `json:"roll_id,omitempty"`
}

func (c *Coordinator) handleHistory(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := HistoryRequest{Limit: 100}
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	f := historyFilter{node: req.NodeID, reason: req.Reason}
	if req.Since != nil {
		f.since = *req.Since
	}
	all, err := c.history(ctx, f)
	if err != nil {
		return nil, err
	}
	if len(all) > req.Limit {
		all = all[len(all)-req.Limit:]
	}
	// Roll ids a caller chose need not start with "roll-": the rolls on
	// record name them (a short read; without it only "roll-" ids show).
	known := map[string]bool{}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if rolls, err := c.state.rolls(rctx); err == nil {
		for _, r := range rolls {
			known[r.ID] = true
		}
	}
	cancel()
	out := make([]HistoryEntry, 0, len(all))
	for _, r := range all {
		e := HistoryEntry{RestartID: r.RestartID, NodeID: r.NodeID, Reason: r.Reason, Graceful: r.Graceful, Success: r.Success,
			Duration: r.Duration, StartedAt: r.StartedAt, CompletedAt: r.CompletedAt}
		e.RollID = rollOfRestart(r.RestartID, r.NodeID, known)
		out = append(out, e)
	}
	return map[string]any{"type": "io.restartcoord.v1.history", "restarts": out}, nil
}

// rollOfRestart is the roll a restart belongs to, from its restart id:
// "<roll>-<node>", or "<roll>-<node>-retry<N>" for a try after a failure
// (see rollRecord.restartID). The roll is one on record in known, or any
// id starting "roll-" (the coordinator's own, kept after the roll record
// is gone); "" when the restart was no roll's.
func rollOfRestart(restartID, node string, known map[string]bool) string {
	roll, ok := strings.CutSuffix(restartID, "-"+node)
	if !ok {
		if i := strings.LastIndex(restartID, "-retry"); i > 0 {
			if _, err := strconv.Atoi(restartID[i+len("-retry"):]); err == nil {
				roll, ok = strings.CutSuffix(restartID[:i], "-"+node)
			}
		}
	}
	if !ok || roll == "" {
		return ""
	}
	if known[roll] || (strings.HasPrefix(roll, "roll-") && len(roll) > len("roll-")) {
		return roll
	}
	return ""
}

// ReportRequest is the body of cluster.report.
type ReportRequest struct {
	Window float64 `json:"window"` // seconds (604800)
}

// Validate implements schema.Validator.
func (r *ReportRequest) Validate() error {
	if math.IsNaN(r.Window) || r.Window < 60 || r.Window > 366*24*3600 {
		return schema.Invalid("window", "window must be 60 s .. 366 days, got %v", r.Window)
	}
	return nil
}

// Report is the seed's weekly performance analysis, from the history.
type Report struct {
	Type                  string             `json:"type"`
	Period                string             `json:"period"`
	From                  time.Time          `json:"from"`
	To                    time.Time          `json:"to"`
	TotalRestarts         int                `json:"total_restarts"`
	SuccessRate           float64            `json:"success_rate"`
	AverageDuration       float64            `json:"average_duration"`
	P95Duration           float64            `json:"p95_duration"`
	ReconnectionRate      float64            `json:"reconnection_rate"`
	StatePreservationRate float64            `json:"state_preservation_rate"`
	DowntimeSeconds       float64            `json:"downtime_seconds"`
	ByReason              map[string]int     `json:"by_reason"`
	ErrorsByType          map[string]int     `json:"errors_by_type"`
	SLOCompliance         map[string]bool    `json:"slo_compliance"`
	Targets               map[string]float64 `json:"targets"`
}

func (c *Coordinator) handleReport(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := ReportRequest{Window: 7 * 24 * 3600}
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	to := time.Now().UTC()
	from := to.Add(-schema.Seconds(req.Window))
	all, err := c.history(ctx, historyFilter{since: from})
	if err != nil {
		return nil, err
	}
	rep := BuildReport(all, from, to)
	ok, bad := c.reconnections(ctx)
	rep.ReconnectionRate = 100
	if ok+bad > 0 {
		rep.ReconnectionRate = round2(float64(ok) * 100 / float64(ok+bad))
	}
	rep.SLOCompliance["reconnection"] = rep.ReconnectionRate >= 99
	return rep, nil
}

// BuildReport computes the report from restart results (pure).
func BuildReport(all []schema.RestartResult, from, to time.Time) *Report {
	window := to.Sub(from)
	rep := &Report{Type: "io.restartcoord.v1.report", Period: window.String(), From: from, To: to,
		ByReason: map[string]int{}, ErrorsByType: map[string]int{}, SLOCompliance: map[string]bool{},
		SuccessRate: 100, StatePreservationRate: 100, ReconnectionRate: 100}
	var durations []float64
	succ, graceful, preserved := 0, 0, 0
	for _, r := range all {
		if r.CompletedAt.Before(from) || r.CompletedAt.After(to) {
			continue
		}
		rep.TotalRestarts++
		rep.ByReason[string(r.Reason)]++
		durations = append(durations, r.Duration)
		rep.DowntimeSeconds += r.Duration
		if r.Success {
			succ++
		} else if r.Error != nil {
			rep.ErrorsByType[string(r.Error.Code)]++
		} else {
			rep.ErrorsByType["UNKNOWN"]++
		}
		if r.Graceful {
			graceful++
			if r.Success && r.State.Preserved && r.State.TasksRestored >= r.State.TasksSaved {
				preserved++
			}
		}
	}
	if rep.TotalRestarts > 0 {
		rep.SuccessRate = round2(float64(succ) * 100 / float64(rep.TotalRestarts))
		var sum float64
		for _, d := range durations {
			sum += d
		}
		rep.AverageDuration = round3(sum / float64(len(durations)))
		slices.Sort(durations)
		rep.P95Duration = durations[int(math.Ceil(0.95*float64(len(durations))))-1]
	}
	if graceful > 0 {
		rep.StatePreservationRate = round2(float64(preserved) * 100 / float64(graceful))
	}
	rep.DowntimeSeconds = round3(rep.DowntimeSeconds)
	allowed := 300 * window.Hours() / (30 * 24) // 5 min a month, prorated
	rep.Targets = map[string]float64{"success_rate": 99.5, "duration": 30, "reconnection": 99, "state_preservation": 100,
		"downtime_seconds": round3(allowed)}
	rep.SLOCompliance["success_rate"] = rep.SuccessRate >= 99.5
	rep.SLOCompliance["duration"] = rep.AverageDuration <= 30
	rep.SLOCompliance["reconnection"] = rep.ReconnectionRate >= 99
	rep.SLOCompliance["state_preservation"] = rep.StatePreservationRate >= 100
	rep.SLOCompliance["downtime"] = rep.DowntimeSeconds <= allowed
	return rep
}

// reconnections sums the nodes' reconnection statistics.
func (c *Coordinator) reconnections(ctx context.Context) (ok, bad int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, v := range c.mem.snapshot() {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			var rt schema.ReconnectTest
			if c.conn.RequestJSON(rctx, schema.NodeSubject(id, schema.OpReconnectTest), map[string]any{"include_buffer_status": false}, nil, &rt) != nil ||
				rt.Results.ReconnectionStats == nil {
				return
			}
			mu.Lock()
			ok += rt.Results.ReconnectionStats.SuccessfulReconnections
			bad += rt.Results.ReconnectionStats.FailedReconnections
			mu.Unlock()
		}(v.Info.NodeID)
	}
	wg.Wait()
	return ok, bad
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

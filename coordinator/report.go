package coordinator

import (
	"context"
	"encoding/json"
	"math"
	"strconv"
	"strings"
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
type HistoryEntry = schema.ClusterRestart

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
// DowntimeSeconds is the sum over nodes of DowntimeByNode; the downtime
// SLO holds when every node is within DowntimeBudgetSeconds (5 minutes a
// month, prorated to the window). The duration SLO is over graceful
// restarts (GracefulAverageDuration); AverageDuration and P95Duration are
// over every restart.
type Report struct {
	Type                    string                   `json:"type"`
	Period                  string                   `json:"period"`
	From                    time.Time                `json:"from"`
	To                      time.Time                `json:"to"`
	TotalRestarts           int                      `json:"total_restarts"`
	SuccessRate             float64                  `json:"success_rate"`
	AverageDuration         float64                  `json:"average_duration"`
	P95Duration             float64                  `json:"p95_duration"`
	GracefulRestarts        int                      `json:"graceful_restarts"`
	GracefulAverageDuration float64                  `json:"graceful_average_duration"`
	ReconnectionRate        float64                  `json:"reconnection_rate"`
	Reconnection            ReconnectionKPI          `json:"reconnection"`
	StatePreservationRate   float64                  `json:"state_preservation_rate"`
	DowntimeSeconds         float64                  `json:"downtime_seconds"`
	DowntimeBudgetSeconds   float64                  `json:"downtime_budget_seconds"`
	DowntimeByNode          map[string]*NodeDowntime `json:"downtime_by_node"`
	ByReason                map[string]int           `json:"by_reason"`
	ByType                  map[string]*TypeStats    `json:"by_type"`
	ErrorsByType            map[string]int           `json:"errors_by_type"`
	SLOCompliance           map[string]bool          `json:"slo_compliance"`
	Targets                 map[string]float64       `json:"targets"`
}

func (c *Coordinator) handleReport(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := ReportRequest{Window: 7 * 24 * 3600}
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	to := time.Now().UTC()
	return c.report(ctx, to.Add(-schema.Seconds(req.Window)), to)
}

// report gathers the facts of [from, to] and computes the report. Restart
// results, outages and reconnection windows are each one read of a
// stream; a failed read fails the report rather than understating it.
func (c *Coordinator) report(ctx context.Context, from, to time.Time) (*Report, error) {
	all, err := c.history(ctx, historyFilter{since: from})
	if err != nil {
		return nil, err
	}
	f := ReportFacts{From: from, To: to, Restarts: all, Rolls: map[string]bool{}}
	// Roll ids a caller chose (a short read; without it only "roll-" ids
	// and the rolling_restart reason mark a roll's restarts).
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if rolls, err := c.state.rolls(rctx); err == nil {
		for _, r := range rolls {
			f.Rolls[r.ID] = true
		}
	}
	cancel()
	// A node declared failed before the window may still be down in it:
	// its alert is looked for a week further back.
	var alerts []alertRecord
	err = c.readSince(ctx, schema.StreamAlerts, []string{schema.AlertSubject(schema.SeverityCritical, AlertHealthCheckFailed),
		schema.AlertSubject(schema.SeverityInfo, AlertNodeRecovered)}, from.Add(-7*24*time.Hour), func(data []byte) {
		var a alertRecord
		if json.Unmarshal(data, &a) == nil && schema.ValidToken(a.NodeID) {
			alerts = append(alerts, a)
		}
	})
	if err != nil {
		return nil, err
	}
	f.Outages = outagesFrom(alerts, all, to)
	if f.Reconnections, err = c.reconnectionOutcomes(ctx, from); err != nil {
		return nil, err
	}
	return BuildReportFrom(f), nil
}

// readSince reads the messages of stream on subjects stored since since,
// oldest first, waiting for JetStream up to historyWait.
func (c *Coordinator) readSince(ctx context.Context, stream string, subjects []string, since time.Time, fn func([]byte)) error {
	ctx, cancel := context.WithTimeout(ctx, historyWait)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
	return bus.ReadAll(ctx, c.bs.JetStream(), stream, cfg, func(m jetstream.Msg) error {
		fn(m.Data())
		return nil
	})
}

// reconnectionOutcomes reads the nodes' closed reconnection windows since
// since (each node's worker publishes one per restart, 60 s after it is
// ready, or once every client is back).
func (c *Coordinator) reconnectionOutcomes(ctx context.Context, since time.Time) ([]schema.ReconnectionOutcome, error) {
	var out []schema.ReconnectionOutcome
	err := c.readSince(ctx, schema.StreamEvents, []string{schema.NodeEventSubject("*", schema.EventReconnection)}, since, func(data []byte) {
		var o schema.ReconnectionOutcome
		if json.Unmarshal(data, &o) == nil {
			out = append(out, o)
		}
	})
	return out, err
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

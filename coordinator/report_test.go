package coordinator

import (
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

func TestBuildReport(t *testing.T) {
	to := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	from := to.Add(-7 * 24 * time.Hour)
	at := func(h int) time.Time { return to.Add(-time.Duration(h) * time.Hour) }
	ok := func(reason schema.Reason, d float64, h int) schema.RestartResult {
		return schema.RestartResult{Success: true, Graceful: true, Reason: reason, Duration: d, CompletedAt: at(h),
			State: schema.StateSummary{Preserved: true, SnapshotWritten: true, TasksSaved: 5, TasksRestored: 5}}
	}
	var rs []schema.RestartResult
	for i := range 19 {
		rs = append(rs, ok(schema.ReasonRollingRestart, float64(i+1)/10, i+1))
	}
	failed := schema.RestartResult{Success: false, Graceful: true, Reason: schema.ReasonManualRequest, Duration: 40, CompletedAt: at(30),
		Error: &schema.Error{Code: schema.CodeProcessFailed}}
	old := ok(schema.ReasonManualRequest, 100, 24*8) // outside the window
	rs = append(rs, failed, old)
	rep := BuildReport(rs, from, to)
	if rep.TotalRestarts != 20 || rep.SuccessRate != 95 || rep.ByReason["rolling_restart"] != 19 || rep.ErrorsByType["PROCESS_FAILED"] != 1 {
		t.Fatalf("report %+v", rep)
	}
	if rep.P95Duration != 1.9 || rep.AverageDuration != 2.95 {
		t.Fatalf("p95 %v average %v, want 1.9 and 2.95", rep.P95Duration, rep.AverageDuration)
	}
	if rep.StatePreservationRate != 95 || rep.DowntimeSeconds != 59 {
		t.Fatalf("preservation %v downtime %v", rep.StatePreservationRate, rep.DowntimeSeconds)
	}
	// 5 min a month prorated to a week is 70 s: 59 s of downtime meets it.
	want := map[string]bool{"success_rate": false, "duration": true, "reconnection": true, "state_preservation": false, "downtime": true}
	for k, v := range want {
		if rep.SLOCompliance[k] != v {
			t.Errorf("slo %s: got %v, want %v", k, rep.SLOCompliance[k], v)
		}
	}
	if empty := BuildReport(nil, from, to); empty.SuccessRate != 100 || empty.TotalRestarts != 0 || !empty.SLOCompliance["success_rate"] {
		t.Fatalf("empty window: %+v", empty)
	}
}

func TestRollOfRestart(t *testing.T) {
	known := map[string]bool{"nightly-7": true}
	for _, c := range []struct{ restart, node, want string }{
		{"roll-3f9a2c1e-4b7d-node-1", "node-1", "roll-3f9a2c1e-4b7d"},
		{"roll-3f9a2c1e-4b7d-node-1-retry2", "node-1", "roll-3f9a2c1e-4b7d"},
		{"nightly-7-node-1", "node-1", "nightly-7"},
		{"nightly-7-node-1-retry1", "node-1", "nightly-7"},
		{"nightly-8-node-1", "node-1", ""},                  // not on record, not the coordinator's own form
		{"roll-x-node-2", "node-1", ""},                     // another node's
		{"3b1d7c2a-manual", "node-1", ""},                   // an operator's restart
		{"roll--node-1", "node-1", ""},                      // "roll-" alone names nothing
		{"roll-a-node-1-retryx", "node-1", ""},              // not a retry suffix, so not "-node-1"
		{"roll-a-node-1-retry1", "node-1-retry1", "roll-a"}, // the node's id is the whole tail: a first try
	} {
		if got := rollOfRestart(c.restart, c.node, known); got != c.want {
			t.Errorf("rollOfRestart(%q, %q) = %q, want %q", c.restart, c.node, got, c.want)
		}
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

// The report shows rates per restart type, the graceful average the
// duration SLO is judged on, and each node's downtime against its budget.
func TestRenderReportKPIs(t *testing.T) {
	to := time.Date(2025, 1, 8, 0, 0, 0, 0, time.UTC)
	rep := coordinator.BuildReportFrom(coordinator.ReportFacts{From: to.Add(-7 * 24 * time.Hour), To: to,
		Restarts: []schema.RestartResult{
			{NodeID: "node-1", Reason: schema.ReasonManualRequest, Graceful: true, Success: true, Duration: 2, CompletedAt: to.Add(-2 * time.Hour)},
			{NodeID: "node-2", Reason: schema.ReasonEmergencyShutdown, Success: false, Duration: 50, CompletedAt: to.Add(-time.Hour),
				Error: &schema.Error{Code: schema.CodeTimeoutExceeded}},
		},
		Outages:       []coordinator.Outage{{NodeID: "node-3", Start: to.Add(-3 * time.Hour), End: to.Add(-2 * time.Hour)}},
		Reconnections: []schema.ReconnectionOutcome{{NodeID: "node-1", Reconnected: 3, Failed: 1, Seconds: 1, ClosedAt: to.Add(-time.Hour)}},
	})
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var r coordinator.Report // as the CLI gets it
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	renderReport(&buf, &r)
	out := buf.String()
	for _, want := range []string{
		"graceful restarts: 2.00s over 1", "75.00% (3 of 4 clients back within 60s, over 1 restarts)",
		"by restart type:", "emergency       1      0   1       0.00%    100.00%  TIMEOUT_EXCEEDED 1",
		"crash recovery  0      0   0       -        -",
		"downtime by node (budget 1m10s each):", "node-3  1h0m0s    0.00s     1h0m0s           OVER",
		"<= 30s average of graceful restarts", "1h0m0s (node-3)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

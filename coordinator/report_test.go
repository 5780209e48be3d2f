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

// The KPIs on known histories: each case is a week of facts and the
// figures they must give.
func TestBuildReportKPIs(t *testing.T) {
	to := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	from := to.Add(-7 * 24 * time.Hour)
	at := func(d time.Duration) time.Time { return to.Add(-d) }
	restart := func(node, id string, reason schema.Reason, graceful, ok bool, secs float64, end time.Time) schema.RestartResult {
		r := schema.RestartResult{RestartID: id, NodeID: node, Reason: reason, Graceful: graceful, Success: ok, Duration: secs,
			StartedAt: end.Add(-schema.Seconds(secs)), CompletedAt: end,
			State: schema.StateSummary{Preserved: graceful, TasksSaved: 3, TasksRestored: 3}}
		if !ok {
			r.Error = &schema.Error{Code: schema.CodeProcessFailed}
		}
		return r
	}
	outcome := func(node string, back, failed int, secs float64, closed time.Time) schema.ReconnectionOutcome {
		return schema.ReconnectionOutcome{NodeID: node, Reconnected: back, Failed: failed, Expected: back + failed, Seconds: secs, ClosedAt: closed}
	}
	// 5 min a month prorated to a week: 70 s per node.
	const budget = 70.0
	type want struct {
		total               int
		successRate         float64
		averageDuration     float64
		gracefulAverage     float64
		byType              map[string][3]int // total, succeeded, failed
		errorRate           map[string]float64
		reconnectionRate    float64
		reconnected, failed int
		downtime            map[string]float64 // per node
		failedSeconds       map[string]float64
		downtimeTotal       float64
		slo                 map[string]bool
	}
	for _, c := range []struct {
		name  string
		facts ReportFacts
		want  want
	}{
		{
			name: "the duration SLO is over graceful restarts only",
			facts: ReportFacts{Restarts: []schema.RestartResult{
				restart("n1", "a", schema.ReasonManualRequest, true, true, 2, at(48*time.Hour)),
				restart("n2", "b", schema.ReasonEmergencyShutdown, false, true, 60, at(30*time.Hour)),
				restart("n3", "c", schema.ReasonCrashRecovery, false, true, 64, at(20*time.Hour)),
				restart("n1", "d", schema.ReasonConfigurationUpdate, true, true, 4, at(10*time.Hour)),
			}},
			want: want{total: 4, successRate: 100, averageDuration: 32.5, gracefulAverage: 3,
				byType:   map[string][3]int{TypeGraceful: {2, 2, 0}, TypeEmergency: {1, 1, 0}, TypeCrashRecovery: {1, 1, 0}, TypeRolling: {0, 0, 0}},
				downtime: map[string]float64{"n1": 6, "n2": 60, "n3": 64}, downtimeTotal: 130, reconnectionRate: 100,
				// The old figure averaged every restart: 32.5 s, a violation.
				slo: map[string]bool{"duration": true, "success_rate": true, "downtime": true}},
		},
		{
			name: "success and error rates per restart type",
			facts: ReportFacts{Rolls: map[string]bool{"nightly-7": true}, Restarts: []schema.RestartResult{
				restart("n1", "g1", schema.ReasonManualRequest, true, true, 1, at(90*time.Hour)),
				restart("n1", "g2", schema.ReasonManualRequest, true, false, 1, at(80*time.Hour)),
				restart("n1", "g3", schema.ReasonSchemaMigration, true, true, 1, at(70*time.Hour)),
				restart("n1", "g4", schema.ReasonDRTest, true, true, 1, at(60*time.Hour)),
				restart("n2", "e1", schema.ReasonEmergencyShutdown, false, false, 1, at(50*time.Hour)),
				restart("n2", "c1", schema.ReasonCrashRecovery, false, true, 1, at(40*time.Hour)),
				// A roll's restarts: by a roll on record's id, by the
				// coordinator's own id form, by reason; emergency or not.
				restart("n3", "nightly-7-n3", schema.ReasonConfigurationUpdate, true, true, 1, at(30*time.Hour)),
				restart("n3", "roll-1a2b-n3-retry1", schema.ReasonManualRequest, false, true, 1, at(20*time.Hour)),
				restart("n3", "x9", schema.ReasonRollingRestart, true, false, 1, at(10*time.Hour)),
				// A crash recovery during a roll is still a crash recovery.
				restart("n3", "roll-1a2b-n3", schema.ReasonCrashRecovery, false, true, 1, at(5*time.Hour)),
			}},
			want: want{total: 10, successRate: 70, averageDuration: 1, gracefulAverage: 1,
				byType:    map[string][3]int{TypeGraceful: {4, 3, 1}, TypeEmergency: {1, 0, 1}, TypeCrashRecovery: {2, 2, 0}, TypeRolling: {3, 2, 1}},
				errorRate: map[string]float64{TypeGraceful: 25, TypeEmergency: 100, TypeCrashRecovery: 0, TypeRolling: 33.33},
				downtime:  map[string]float64{"n1": 4, "n2": 2, "n3": 4}, downtimeTotal: 10, reconnectionRate: 100,
				slo: map[string]bool{"success_rate": false, "duration": true}},
		},
		{
			name: "a client that never returns counts as failed",
			facts: ReportFacts{Reconnections: []schema.ReconnectionOutcome{
				outcome("n1", 3, 0, 1.5, at(30*time.Hour)),
				outcome("n2", 2, 1, 0.5, at(20*time.Hour)), // one of three never came back
				outcome("n2", 0, 9, 0, at(8*24*time.Hour)), // closed before the window
			}},
			want: want{successRate: 100, reconnectionRate: 83.33, reconnected: 5, failed: 1, downtime: map[string]float64{},
				byType: map[string][3]int{TypeGraceful: {0, 0, 0}},
				slo:    map[string]bool{"reconnection": false, "downtime": true}},
		},
		{
			name: "a node declared failed counts its outage against its own budget",
			facts: ReportFacts{
				Restarts: []schema.RestartResult{
					restart("n1", "a", schema.ReasonManualRequest, true, true, 50, at(50*time.Hour)),
					restart("n2", "b", schema.ReasonManualRequest, true, true, 50, at(40*time.Hour)),
					// n3's restart overlaps its outage: counted once.
					restart("n3", "c", schema.ReasonCrashRecovery, false, true, 30, at(3*time.Hour).Add(10*time.Second)),
				},
				Outages: []Outage{
					{NodeID: "n3", Start: at(3 * time.Hour).Add(-30 * time.Second), End: at(3 * time.Hour)},
					{NodeID: "n4", Start: at(2 * time.Hour), End: at(time.Hour)},                           // down an hour
					{NodeID: "n5", Start: at(9 * 24 * time.Hour), End: at(7*24*time.Hour - 5*time.Second)}, // 5 s in the window
				}},
			want: want{total: 3, successRate: 100, averageDuration: 43.333, gracefulAverage: 50, reconnectionRate: 100,
				byType: map[string][3]int{TypeGraceful: {2, 2, 0}, TypeCrashRecovery: {1, 1, 0}},
				// n3: restart [-3h-20s, -3h+10s] and outage [-3h-30s, -3h]: 40 s.
				downtime:      map[string]float64{"n1": 50, "n2": 50, "n3": 40, "n4": 3600, "n5": 5},
				failedSeconds: map[string]float64{"n3": 30, "n4": 3600, "n5": 5},
				downtimeTotal: 3745,
				slo:           map[string]bool{"downtime": false}},
		},
		{
			name: "each node has its own budget, not one for the fleet",
			facts: ReportFacts{Restarts: []schema.RestartResult{
				restart("n1", "a", schema.ReasonManualRequest, true, true, 60, at(50*time.Hour)),
				restart("n2", "b", schema.ReasonManualRequest, true, true, 60, at(40*time.Hour)),
				restart("n3", "c", schema.ReasonManualRequest, true, true, 60, at(30*time.Hour)),
			}},
			want: want{total: 3, successRate: 100, averageDuration: 60, gracefulAverage: 60, reconnectionRate: 100,
				byType:   map[string][3]int{TypeGraceful: {3, 3, 0}},
				downtime: map[string]float64{"n1": 60, "n2": 60, "n3": 60}, downtimeTotal: 180,
				// 180 s in all is over 70 s, but no node is over its own.
				slo: map[string]bool{"downtime": true}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.facts.From, c.facts.To = from, to
			rep := BuildReportFrom(c.facts)
			w := c.want
			if rep.TotalRestarts != w.total || rep.SuccessRate != w.successRate || rep.AverageDuration != w.averageDuration ||
				rep.GracefulAverageDuration != w.gracefulAverage {
				t.Errorf("total %d success %v average %v graceful average %v, want %d %v %v %v", rep.TotalRestarts, rep.SuccessRate,
					rep.AverageDuration, rep.GracefulAverageDuration, w.total, w.successRate, w.averageDuration, w.gracefulAverage)
			}
			if len(rep.ByType) != 4 {
				t.Errorf("by_type has %d types, want all 4", len(rep.ByType))
			}
			for k, v := range w.byType {
				ts := rep.ByType[k]
				if got := [3]int{ts.Total, ts.Succeeded, ts.Failed}; got != v {
					t.Errorf("by_type[%s] total/succeeded/failed %v, want %v", k, got, v)
				}
			}
			for k, v := range w.errorRate {
				if got := rep.ByType[k].ErrorRate; got != v {
					t.Errorf("by_type[%s].error_rate %v, want %v", k, got, v)
				}
			}
			if rep.ReconnectionRate != w.reconnectionRate || rep.Reconnection.Reconnected != w.reconnected || rep.Reconnection.Failed != w.failed {
				t.Errorf("reconnection %v %+v, want %v (%d back, %d failed)", rep.ReconnectionRate, rep.Reconnection,
					w.reconnectionRate, w.reconnected, w.failed)
			}
			if len(rep.DowntimeByNode) != len(w.downtime) {
				t.Errorf("downtime by node %v, want %v", rep.DowntimeByNode, w.downtime)
			}
			for n, secs := range w.downtime {
				d := rep.DowntimeByNode[n]
				if d == nil || d.Seconds != secs || d.WithinBudget != (secs <= budget) || d.FailedSeconds != w.failedSeconds[n] {
					t.Errorf("downtime of %s %+v, want %v s (%v s declared failed)", n, d, secs, w.failedSeconds[n])
				}
			}
			if rep.DowntimeSeconds != w.downtimeTotal || rep.DowntimeBudgetSeconds != budget {
				t.Errorf("downtime %v budget %v, want %v and %v", rep.DowntimeSeconds, rep.DowntimeBudgetSeconds, w.downtimeTotal, budget)
			}
			for k, v := range w.slo {
				if rep.SLOCompliance[k] != v {
					t.Errorf("slo %s: got %v, want %v", k, rep.SLOCompliance[k], v)
				}
			}
		})
	}
}

// A node declared failed is down from its last heartbeat to when it was
// heard again; without a recovery on record, to its next restart, else to
// the window's end.
func TestOutagesFrom(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	to := t0.Add(time.Hour)
	failed := func(node string, at, lastHB time.Time) alertRecord {
		return alertRecord{Kind: AlertHealthCheckFailed, NodeID: node, Timestamp: at,
			Details: map[string]any{"last_heartbeat": lastHB.Format(time.RFC3339Nano)}}
	}
	recovered := func(node string, at time.Time) alertRecord {
		return alertRecord{Kind: AlertNodeRecovered, NodeID: node, Timestamp: at.Add(time.Second),
			Details: map[string]any{"recovered_at": at.Format(time.RFC3339Nano)}}
	}
	for _, c := range []struct {
		name     string
		alerts   []alertRecord
		restarts []schema.RestartResult
		want     []Outage
	}{
		{"heard again", []alertRecord{failed("n1", t0.Add(4*time.Second), t0), recovered("n1", t0.Add(time.Minute))}, nil,
			[]Outage{{"n1", t0, t0.Add(time.Minute)}}},
		{"another node's recovery ends nothing", []alertRecord{failed("n1", t0.Add(4*time.Second), t0), recovered("n2", t0.Add(time.Minute))}, nil,
			[]Outage{{"n1", t0, to}}},
		{"a recovery before the failure ends nothing", []alertRecord{recovered("n1", t0.Add(-time.Minute)), failed("n1", t0.Add(4*time.Second), t0)}, nil,
			[]Outage{{"n1", t0, to}}},
		{"no recovery: ends at the node's next restart", []alertRecord{failed("n1", t0.Add(4*time.Second), t0)},
			[]schema.RestartResult{{NodeID: "n1", CompletedAt: t0.Add(-time.Minute)}, {NodeID: "n2", CompletedAt: t0.Add(time.Minute)},
				{NodeID: "n1", CompletedAt: t0.Add(10 * time.Minute)}, {NodeID: "n1", CompletedAt: t0.Add(20 * time.Minute)}},
			[]Outage{{"n1", t0, t0.Add(10 * time.Minute)}}},
		{"failed twice, recovered twice", []alertRecord{failed("n1", t0.Add(4*time.Second), t0), recovered("n1", t0.Add(time.Minute)),
			failed("n1", t0.Add(10*time.Minute), t0.Add(10*time.Minute-3*time.Second)), recovered("n1", t0.Add(11*time.Minute))}, nil,
			[]Outage{{"n1", t0, t0.Add(time.Minute)}, {"n1", t0.Add(10*time.Minute - 3*time.Second), t0.Add(11 * time.Minute)}}},
		{"no last heartbeat: from the declaration", []alertRecord{{Kind: AlertHealthCheckFailed, NodeID: "n1", Timestamp: t0}}, nil,
			[]Outage{{"n1", t0, to}}},
		{"a resolution starts nothing", []alertRecord{failed("n1", t0.Add(4*time.Second), t0), recovered("n1", t0.Add(time.Minute)),
			{Kind: AlertHealthCheckFailed, Status: schema.AlertStatusResolved, NodeID: "n1", Timestamp: t0.Add(time.Minute + 2*time.Second)}}, nil,
			[]Outage{{"n1", t0, t0.Add(time.Minute)}}},
		{"a node answering unhealthy is not declared failed", []alertRecord{{Kind: AlertHealthCheckFailed, NodeID: "n1", Timestamp: t0,
			Details: map[string]any{"reason": HealthUnhealthy}}}, nil, nil},
		{"declared failed while alerted unhealthy: from the declaration", []alertRecord{
			{Kind: AlertHealthCheckFailed, NodeID: "n1", Timestamp: t0, Details: map[string]any{"reason": HealthUnhealthy}},
			failed("n1", t0.Add(10*time.Minute), t0.Add(10*time.Minute-3*time.Second)), recovered("n1", t0.Add(11*time.Minute))}, nil,
			[]Outage{{"n1", t0.Add(10*time.Minute - 3*time.Second), t0.Add(11 * time.Minute)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := outagesFrom(c.alerts, c.restarts, to)
			if len(got) != len(c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			for i := range got {
				if got[i].NodeID != c.want[i].NodeID || !got[i].Start.Equal(c.want[i].Start) || !got[i].End.Equal(c.want[i].End) {
					t.Errorf("outage %d: got %+v, want %+v", i, got[i], c.want[i])
				}
			}
		})
	}
}

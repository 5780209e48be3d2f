package coordinator

import (
	"context"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/restartcoord/restartcoord/internal/metrics/metricstest"
	"github.com/restartcoord/restartcoord/schema"
)

// TestFleetCollectorEmitsFleetGaugesOnlyOnTheLeader: the fleet collector
// over fixed facts. A follower (or a coordinator not yet serving) emits
// only restartcoord_coordinator_leader 0; a leader emits every fleet gauge,
// the roll gauges only when the rolls could be read, and the progress
// ratio only with a roll in progress. The alerts counter counts by
// severity and kind, and promlint finds nothing in any of it.
func TestFleetCollectorEmitsFleetGaugesOnlyOnTheLeader(t *testing.T) {
	leader := fleetFacts{Leader: true,
		Nodes:  map[string]int{FleetHealthy: 3, FleetRestarting: 1, FleetFailed: 1},
		Levels: map[int]int{LevelNone: 4, LevelEngineering: 1}, BreakerOpen: true}
	withRolls := leader
	withRolls.RollsRead, withRolls.Running, withRolls.Paused = true, 1, 1
	withRolls.RollNodes = map[string]int{"done": 3, "current": 1, "failed": 1, "total": 10}
	rollsDone := leader
	rollsDone.RollsRead = true
	fleet := map[string]map[string]float64{
		"restartcoord_fleet_nodes": {"state=healthy": 3, "state=unhealthy": 0, "state=restarting": 1,
			"state=unreachable": 0, "state=failed": 1},
		"restartcoord_fleet_escalation_level": {"level=0": 4, "level=1": 0, "level=2": 0, "level=3": 1},
		"restartcoord_circuit_breaker_open":   {"": 1},
	}
	noRolls := map[string]map[string]float64{"restartcoord_rolls_in_progress": {}, "restartcoord_rolls_paused": {},
		"restartcoord_roll_nodes": {}, "restartcoord_roll_progress_ratio": {}}
	empty := func(names ...string) map[string]map[string]float64 {
		out := map[string]map[string]float64{}
		for _, n := range names {
			out[n] = map[string]float64{}
		}
		return out
	}
	join := func(ms ...map[string]map[string]float64) map[string]map[string]float64 {
		out := map[string]map[string]float64{}
		for _, m := range ms {
			maps.Copy(out, m)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		serving bool
		facts   fleetFacts
		want    map[string]map[string]float64 // family -> series (empty: absent)
	}{
		{"not serving yet", false, withRolls, join(map[string]map[string]float64{"restartcoord_coordinator_leader": {"": 0}},
			empty("restartcoord_fleet_nodes", "restartcoord_fleet_escalation_level", "restartcoord_circuit_breaker_open"), noRolls)},
		{"follower", true, fleetFacts{}, join(map[string]map[string]float64{"restartcoord_coordinator_leader": {"": 0}},
			empty("restartcoord_fleet_nodes", "restartcoord_fleet_escalation_level", "restartcoord_circuit_breaker_open"), noRolls)},
		{"leader, rolls not read", true, leader, join(map[string]map[string]float64{"restartcoord_coordinator_leader": {"": 1}},
			fleet, noRolls)},
		{"leader, no roll in progress", true, rollsDone, join(map[string]map[string]float64{"restartcoord_coordinator_leader": {"": 1}},
			fleet, map[string]map[string]float64{"restartcoord_rolls_in_progress": {"": 0}, "restartcoord_rolls_paused": {"": 0},
				"restartcoord_roll_nodes":          {"state=done": 0, "state=current": 0, "state=failed": 0, "state=total": 0},
				"restartcoord_roll_progress_ratio": {}})},
		{"leader, two rolls", true, withRolls, join(map[string]map[string]float64{"restartcoord_coordinator_leader": {"": 1}},
			fleet, map[string]map[string]float64{"restartcoord_rolls_in_progress": {"": 2}, "restartcoord_rolls_paused": {"": 1},
				"restartcoord_roll_nodes":          {"state=done": 3, "state=current": 1, "state=failed": 1, "state=total": 10},
				"restartcoord_roll_progress_ratio": {"": 0.3}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := newCoordMetrics(reg, &Coordinator{})
			if err != nil {
				t.Fatal(err)
			}
			m.fleet.facts = func(context.Context) fleetFacts { return tc.facts }
			if tc.serving {
				m.serving()
			}
			for name, want := range tc.want {
				got, err := metricstest.Series(reg, name)
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(got, want) {
					t.Errorf("%s: got %v, want %v", name, got, want)
				}
			}
			m.alerted(schema.SeverityCritical, "health_check_failed")
			m.alerted(schema.SeverityCritical, "health_check_failed")
			m.alerted(schema.SeverityInfo, "circuit_breaker_closed")
			got, err := metricstest.Series(reg, "restartcoord_alerts_total")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]float64{"kind=health_check_failed,severity=critical": 2,
				"kind=circuit_breaker_closed,severity=info": 1}; !maps.Equal(got, want) {
				t.Errorf("restartcoord_alerts_total: got %v, want %v", got, want)
			}
			problems, err := metricstest.Lint(reg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
		})
	}
}

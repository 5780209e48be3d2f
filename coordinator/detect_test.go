package coordinator

import (
	"cmp"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// The breaker counts a node only once it has been unhealthy for the grace,
// or silent for the answer window plus the grace: a blip counts for nothing.
func TestCountsForBreaker(t *testing.T) {
	const window, grace = 3200 * time.Millisecond, 3 * time.Second
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	healthy := schema.Heartbeat{Healthy: true, Phase: schema.PhaseIdle}
	sick := schema.Heartbeat{Healthy: false, Phase: schema.PhaseFailed}
	cases := []struct {
		name   string
		v      NodeView
		window time.Duration // the answer window, if not 3.2 s
		count  bool
		why    string
	}{
		{"registered, never heard", NodeView{}, 0, true, "never heard"},
		{"silent past the window, within the grace",
			NodeView{LastHeartbeat: ago(5 * time.Second), Heartbeat: healthy}, 0, false, "silent for 5s"},
		{"silent for the window plus the grace",
			NodeView{LastHeartbeat: ago(6200 * time.Millisecond), Heartbeat: healthy}, 0, true, "silent for 6.2s"},
		{"declared failed, within the grace",
			NodeView{LastHeartbeat: ago(4 * time.Second), Heartbeat: healthy, Failed: true}, 0, false, "silent for 4s"},
		{"answering unhealthy, within the grace",
			NodeView{LastHeartbeat: ago(100 * time.Millisecond), Heartbeat: sick, UnhealthySince: ago(2 * time.Second)},
			0, false, "unhealthy for 2s (phase failed)"},
		{"answering unhealthy for the grace",
			NodeView{LastHeartbeat: ago(100 * time.Millisecond), Heartbeat: sick, UnhealthySince: ago(3 * time.Second)},
			0, true, "unhealthy for 3s (phase failed)"},
		{"unhealthy for the grace, then silent",
			NodeView{LastHeartbeat: ago(3500 * time.Millisecond), Heartbeat: sick, UnhealthySince: ago(4 * time.Second)},
			0, true, "unhealthy for 4s, then silent for 3.5s"},
		{"unhealthy a moment, then silent (a short window)",
			NodeView{LastHeartbeat: ago(1500 * time.Millisecond), Heartbeat: sick, UnhealthySince: ago(1600 * time.Millisecond)},
			time.Second, false, "unhealthy for 1.6s, then silent for 1.5s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := cmp.Or(tc.window, window)
			why, count := countsForBreaker(tc.v, tc.v.member(w, now), now, w, grace)
			if count != tc.count || why != tc.why {
				t.Fatalf("counts %v (%q), want %v (%q)", count, why, tc.count, tc.why)
			}
		})
	}
}

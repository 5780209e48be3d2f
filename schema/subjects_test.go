package schema_test

import (
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

func TestValidToken(t *testing.T) {
	cases := []struct {
		name, s string
		want    bool
	}{
		{"empty", "", false},
		{"one letter", "a", true},
		{"node id", "node-1", true},
		{"underscore", "client_7", true},
		{"mixed", "Az09-_", true},
		{"64 chars", long(64), true},
		{"65 chars", long(65), false},
		{"dot", "node.1", false},
		{"space", "node 1", false},
		{"leading space", " node", false},
		{"trailing newline", "node\n", false},
		{"tab", "a\tb", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"star inside", "node*", false},
		{"slash", "a/b", false},
		{"colon", "a:b", false},
		{"non-ASCII letter", "nöde", false},
		{"NUL", "a\x00", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := schema.ValidToken(tc.s); got != tc.want {
				t.Errorf("ValidToken(%q): got %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	cases := []struct{ got, want string }{
		{schema.NodeSubject("node-1", schema.OpRestart), "orch.v1.node.node-1.restart"},
		{schema.NodeSubject("node-1", schema.OpHealth), "orch.v1.node.node-1.health"},
		{schema.NodeSubject("node-1", schema.OpPrepare), "orch.v1.node.node-1.shutdown.prepare"},
		{schema.NodeSubject("node-1", schema.OpRestartStatus), "orch.v1.node.node-1.restart.status"},
		{schema.NodeSubject("node-1", schema.OpReconnectTest), "orch.v1.node.node-1.reconnect.test"},
		{schema.NodeSubject("node-1", schema.OpStateBackup), "orch.v1.node.node-1.state.backup"},
		{schema.NodeSubject("node-1", schema.OpStateBackups), "orch.v1.node.node-1.state.backups"},
		{schema.NodeSubject("node-1", schema.OpStateRestore), "orch.v1.node.node-1.state.restore"},
		{schema.NodeSubject("node-1", schema.OpReply), "orch.v1.node.node-1.reply"},
		{schema.RequestSubject("node-1", "c1"), "orch.v1.req.node-1.c1"},
		{schema.RequestFilter("node-1"), "orch.v1.req.node-1.>"},
		{schema.HeartbeatSubject("node-1"), "orch.v1.hb.node-1"},
		{schema.HeartbeatWildcard, "orch.v1.hb.*"},
		{schema.NodeEventSubject("node-1", schema.EventPhase), "orch.v1.evt.node.node-1.phase"},
		{schema.NodeEventSubject("node-1", schema.EventRestartResult), "orch.v1.evt.node.node-1.restart_result"},
		{schema.RollEventSubject("roll-1", "wave_done"), "orch.v1.evt.roll.roll-1.wave_done"},
		{schema.AlertSubject(schema.SeverityCritical, "restart_failed"), "orch.v1.alert.critical.restart_failed"},
		{schema.AlertSubject(schema.SeverityWarning, "slow_restart"), "orch.v1.alert.warning.slow_restart"},
		{schema.AlertSubject(schema.SeverityInfo, "backup_age"), "orch.v1.alert.info.backup_age"},
		{schema.AuditSubject("restart"), "orch.v1.audit.restart"},
		{schema.JournalSubject("node-1"), "orch.v1.journal.node-1"},
		{schema.NotifySubject("node-1"), "orch.v1.notify.node-1"},
		{schema.ClientPingSubject("c1"), "orch.v1.client.c1.ping"},
		{schema.LeaseKeyNode("node-1"), "node.node-1"},
		{schema.RequestsSubjects, "orch.v1.req.>"},
		{schema.JournalSubjects, "orch.v1.journal.>"},
		{schema.EventsSubjects, "orch.v1.evt.>"},
		{schema.AlertsSubjects, "orch.v1.alert.>"},
		{schema.AuditSubjects, "orch.v1.audit.>"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// Streams never capture control subjects: the request stream's filter does
// not match orch.v1.node.> or orch.v1.cluster.>.
func TestRequestStreamDoesNotCaptureControl(t *testing.T) {
	for _, s := range []string{schema.NodeSubject("node-1", schema.OpRestart), "orch.v1.cluster.health"} {
		if strings.HasPrefix(s, strings.TrimSuffix(schema.RequestsSubjects, ">")) {
			t.Errorf("got %s under %s, want not", s, schema.RequestsSubjects)
		}
	}
}

func TestNodeOpsOrder(t *testing.T) {
	want := "restart health shutdown.prepare restart.status reconnect.test state.backup state.backups state.restore reply clients"
	if got := strings.Join(schema.NodeOps, " "); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPhases(t *testing.T) {
	want := []schema.Phase{"idle", "preparing", "maintenance_mode", "suspending_tasks", "serializing_state",
		"closing_connections", "stopping", "starting_process", "loading_state", "restoring_state",
		"resuming_tasks", "enabling_connections", "complete", "failed"}
	if len(schema.Phases) != len(want) {
		t.Fatalf("got %d phases, want %d", len(schema.Phases), len(want))
	}
	for i, p := range want {
		if schema.Phases[i] != p {
			t.Errorf("phase %d: got %q, want %q", i, schema.Phases[i], p)
		}
	}
}

func TestPhaseProgressMonotonic(t *testing.T) {
	prev := -1
	for _, p := range schema.Phases {
		got := p.Progress()
		if p == schema.PhaseFailed {
			if got != 100 {
				t.Errorf("failed: got %d, want 100", got)
			}
			continue
		}
		if got <= prev || got < 0 || got > 100 {
			t.Errorf("%s: got %d after %d, want strictly increasing within 0..100", p, got, prev)
		}
		prev = got
		if p == schema.PhaseComplete {
			break
		}
	}
	if prev != 100 {
		t.Errorf("complete: got %d, want 100", prev)
	}
	for p, want := range map[schema.Phase]int{schema.PhaseIdle: 0, schema.PhaseComplete: 100, "no_such_phase": 0} {
		if got := p.Progress(); got != want {
			t.Errorf("%s: got %d, want %d", p, got, want)
		}
	}
	if got := schema.PhaseEnablingConnections.Progress(); got >= 100 {
		t.Errorf("enabling_connections: got %d, want < 100 (only complete is 100)", got)
	}
}

func TestReasons(t *testing.T) {
	want := []schema.Reason{"configuration_update", "schema_migration", "error_recovery", "manual_request",
		"emergency_shutdown", "rolling_restart", "crash_recovery", "dr_test"}
	if len(schema.Reasons) != len(want) {
		t.Fatalf("got %d reasons, want %d", len(schema.Reasons), len(want))
	}
	for _, r := range want {
		if !r.Valid() {
			t.Errorf("%s: got Valid false, want true", r)
		}
	}
	for _, r := range []schema.Reason{"", "reboot", "Manual_Request", "manual_request "} {
		if r.Valid() {
			t.Errorf("%q: got Valid true, want false", r)
		}
	}
}

func TestTaskStatuses(t *testing.T) {
	cases := []struct {
		s               schema.TaskStatus
		valid, terminal bool
	}{
		{"pending", true, false}, {"active", true, false}, {"suspended", true, false},
		{"completed", true, true}, {"failed", true, true}, {"running", false, false}, {"", false, false},
	}
	for _, tc := range cases {
		if got := tc.s.Valid(); got != tc.valid {
			t.Errorf("%q Valid: got %v, want %v", tc.s, got, tc.valid)
		}
		if got := tc.s.Terminal(); got != tc.terminal {
			t.Errorf("%q Terminal: got %v, want %v", tc.s, got, tc.terminal)
		}
	}
}

func TestMessageTypes(t *testing.T) {
	for got, want := range map[string]string{
		schema.TypeError: "io.restartcoord.v1.error", schema.TypeRestartResult: "io.restartcoord.v1.restart_result",
		schema.TypeHealth: "io.restartcoord.v1.health", schema.TypeShutdownReadiness: "io.restartcoord.v1.shutdown_readiness",
		schema.TypeRestartStatus: "io.restartcoord.v1.restart_status", schema.TypeReconnectTest: "io.restartcoord.v1.reconnect_test",
		schema.TypeTaskReply: "io.restartcoord.v1.task_reply",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestSecondsConversions(t *testing.T) {
	cases := []struct {
		s float64
		d time.Duration
	}{{0, 0}, {30, 30 * time.Second}, {0.41, 410 * time.Millisecond}, {12.5, 12500 * time.Millisecond}}
	for _, tc := range cases {
		if got := schema.Seconds(tc.s); got != tc.d {
			t.Errorf("Seconds(%v): got %v, want %v", tc.s, got, tc.d)
		}
		if got := schema.Secs(tc.d); got != tc.s {
			t.Errorf("Secs(%v): got %v, want %v", tc.d, got, tc.s)
		}
	}
	if got := schema.Secs(1234567 * time.Microsecond); got != 1.235 {
		t.Errorf("Secs(1.234567s): got %v, want 1.235 (rounded to ms)", got)
	}
}

package coordinator_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

// restart_frequency, from real restarts: a node restarted more than 5
// times within the window (12 s here, an hour by default) raises it once.
// Its leader is killed while it is open; the next one, which finds the
// conditions open in ORCH_COORD, neither raises it again nor forgets it:
// it resolves it once the count falls back to 5.
func TestRestartFrequencyAlertOutlivesItsLeader(t *testing.T) {
	f := newFleet(t, false)
	f.startNodes(1)
	cfg := f.coordConfig("c1")
	cfg.Ladder.FrequencyOver = 12 * time.Second
	c1 := f.startCoordinatorWith(cfg)
	f.waitFor(10*time.Second, "c1 to lead", func() bool { ok, _ := c1.IsLeader(); return ok })
	cfg.ID = "c2"
	c2 := f.startCoordinatorWith(cfg)
	start := time.Now()
	for i := range 6 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var r schema.RestartResult
		err := f.conn.RequestJSON(ctx, schema.NodeSubject("n01", schema.OpRestart), map[string]any{"graceful": false}, nil, &r)
		cancel()
		if err != nil || !r.Success {
			t.Fatalf("restart %d: %+v %v", i+1, r, err)
		}
	}
	t.Logf("6 restarts in %s", time.Since(start).Round(time.Millisecond))
	a := awaitAlert(t, f, schema.AlertRestartFrequency, "n01", firing, 1)
	if a.Details["restarts"] != float64(6) || a.Source != "c1" {
		t.Fatalf("restart_frequency alert %+v: want 6 restarts, from c1", a)
	}
	c1.Kill()
	r := awaitAlert(t, f, schema.AlertRestartFrequency, "n01", resolved, 1)
	if ok, _ := c2.IsLeader(); !ok || r.Source != "c2" || r.Details["restarts"] != float64(5) {
		t.Fatalf("restart_frequency resolved: %+v (c2 leading: %v); want by c2 at 5 restarts", r, ok)
	}
	if since := r.Timestamp.Sub(start); since < cfg.Ladder.FrequencyOver {
		t.Fatalf("resolved %s after the first restart, before it left the %s window", since, cfg.Ladder.FrequencyOver)
	}
	wantAlerts(t, f, schema.AlertRestartFrequency, "n01", firing, 1)
}

// health_check_failed of a node that answers unhealthy (its workers cannot
// start) for longer than UnhealthyAlertAfter, then goes silent (killed) and
// is declared failed: one fingerprint, raised when it began and repeated
// when the node is declared failed (the report counts its downtime from
// that declaration, not from the unhealthy time before), resolved once the
// node is back and healthy.
func TestHealthCheckFailedFromUnhealthyToDeclaredFailed(t *testing.T) {
	f := newFleet(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, _ := f.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if _, err := kv.Put(ctx, "n09", []byte(`{"config_version":"broken","fail_start":true}`)); err != nil {
		t.Fatal(err)
	}
	f.startNodes(2)
	cmd := f.startNodeProcessUntil("n09", 9, false)
	cfg := f.coordConfig("c1")
	cfg.UnhealthyAlertAfter = time.Second
	f.startCoordinatorWith(cfg)
	a := awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", firing, 1)
	if a.Details["reason"] != coordinator.HealthUnhealthy {
		t.Fatalf("n09 answering unhealthy: %+v", a)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	killed := time.Now()
	a = awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", firing, 2)
	if a.Details["reason"] != coordinator.HealthDeclaredFailed {
		t.Fatalf("n09 silent: %+v", a)
	}
	if err := kv.Delete(ctx, "n09"); err != nil {
		t.Fatal(err)
	}
	f.startNodeProcess("n09", 9)
	back := time.Now()
	awaitAlert(t, f, schema.AlertHealthCheckFailed, "n09", resolved, 1)
	wantAlerts(t, f, schema.AlertHealthCheckFailed, "n09", firing, 2)
	if d := f.report().DowntimeByNode["n09"]; d == nil || d.FailedSeconds <= 0 || d.FailedSeconds > back.Sub(killed).Seconds()+1 {
		t.Fatalf("n09's downtime %+v: want from its last heartbeat to back (%s), not its unhealthy time", d, back.Sub(killed))
	}
}

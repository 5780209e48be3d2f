package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// The restart alerts, each from its real condition, fire once and are
// resolved by the next restart that does not have it: restart_failed (a
// configuration whose worker cannot start; the crash recovery that follows
// succeeds), state_loss (the drain's snapshot and the journal gone before
// the new worker reads them; then a restart that restores everything) and
// slow_restart (a graceful restart held by a job mid-step for the suspend
// timeout; then an emergency restart under the threshold).
func TestRestartAlertsFireOnceAndResolve(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.SuspendTimeout = 3 * time.Second
	cfg.SlowRestart = 2 * time.Second
	e.startNode(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := e.bs.JetStream()
	kv, _ := js.KeyValue(ctx, schema.BucketConfig)

	// restart_failed: resolved by the crash recovery that brings a worker
	// back on the configuration it served with.
	if _, err := kv.Put(ctx, "n1", []byte(`{"config_version":"bad","fail_start":true}`)); err != nil {
		t.Fatal(err)
	}
	if r := e.restart("n1", map[string]any{"reason": "configuration_update"}); r.Success {
		t.Fatalf("restart on a configuration whose worker cannot start: %+v", r)
	}
	failed := awaitAlert(t, e, schema.AlertRestartFailed, "n1", firing, 1)
	back := awaitAlert(t, e, schema.AlertRestartFailed, "n1", resolved, 1)
	t.Logf("restart_failed %q, resolved %q", failed.Message, back.Message)
	wantAlerts(t, e, schema.AlertRestartFailed, "n1", firing, 1)
	if err := kv.Delete(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "n1 healthy again", func() bool { return e.health("n1").Healthy })

	// state_loss: the tasks saved by the drain are gone when the new worker
	// reads its state.
	c := e.client("c1", "n1")
	for i := range 3 {
		if _, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("task %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	phases := make(chan *nats.Msg, 64)
	sub, err := e.conn.ChanSubscribe(schema.NodeEventSubject("n1", schema.EventPhase), phases)
	if err != nil {
		t.Fatal(err)
	}
	wiped := make(chan error, 1)
	go func() {
		for m := range phases {
			var ev schema.PhaseEvent
			if json.Unmarshal(m.Data, &ev) == nil && ev.Phase == schema.PhaseClosingConnections {
				wiped <- e.wipeState(ctx, "n1") // the drain's snapshot is written by now
				return
			}
		}
	}()
	r := e.restart("n1", map[string]any{})
	_ = sub.Unsubscribe()
	close(phases)
	if err := <-wiped; err != nil {
		t.Fatal(err)
	}
	if !r.Success || r.State.TasksSaved != 3 || r.State.TasksRestored != 0 {
		t.Fatalf("restart after its state was wiped: success %v saved %d restored %d, want true 3 0", r.Success, r.State.TasksSaved, r.State.TasksRestored)
	}
	loss := awaitAlert(t, e, schema.AlertStateLoss, "n1", firing, 1)
	if loss.Details["tasks_saved"] != float64(3) || loss.Details["tasks_restored"] != float64(0) {
		t.Fatalf("state_loss details %v", loss.Details)
	}
	if r := e.restart("n1", map[string]any{}); !r.Success || r.State.TasksRestored != r.State.TasksSaved {
		t.Fatalf("restart that keeps its state: %+v", r.State)
	}
	awaitAlert(t, e, schema.AlertStateLoss, "n1", resolved, 1)
	wantAlerts(t, e, schema.AlertStateLoss, "n1", firing, 1)

	// slow_restart: a job's step far from its end holds the drain for the
	// whole suspend timeout (3 s, over the 2 s threshold).
	if _, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: "slow", Job: &schema.Job{Kind: "steps", Steps: 3, StepSeconds: 60}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the job's step to be running", func() bool {
		var pr schema.ShutdownReadiness
		return e.req("n1", schema.OpPrepare, nil, &pr) == nil && pr.Checks.ActiveTasks.Status == "waiting"
	})
	if r := e.restart("n1", map[string]any{}); !r.Success || r.Duration < 2 {
		t.Fatalf("graceful restart held by the job: success %v in %.3fs, want over 2 s", r.Success, r.Duration)
	}
	slow := awaitAlert(t, e, schema.AlertSlowRestart, "n1", firing, 1)
	r = e.restart("n1", map[string]any{"graceful": false})
	if !r.Success || r.Duration >= 2 {
		t.Fatalf("emergency restart: success %v in %.3fs, want under 2 s", r.Success, r.Duration)
	}
	awaitAlert(t, e, schema.AlertSlowRestart, "n1", resolved, 1)
	wantAlerts(t, e, schema.AlertSlowRestart, "n1", firing, 1)
	t.Logf("slow_restart %q", slow.Message)
}

// wipeState deletes a node's snapshots and purges its journal, as a lost
// object store and journal would.
func (e *env) wipeState(ctx context.Context, node string) error {
	list, err := e.bs.ListSnapshots(ctx, node)
	if err != nil {
		return err
	}
	for _, s := range list {
		if err := e.bs.DeleteSnapshot(ctx, node, s.SnapshotID); err != nil {
			return err
		}
	}
	st, err := e.bs.JetStream().Stream(ctx, schema.StreamJournal)
	if err != nil {
		return err
	}
	return st.Purge(ctx, jetstream.WithPurgeSubject(schema.JournalSubject(node)))
}

// buffer_capacity has one fingerprint per node, open while a client's
// buffer is 80% full (n1: one client with 85 of 100) or more than 100
// requests wait on the node (n2: 60 + 50, no client at 80%); it fires once
// and is resolved when the node's worker serves and takes them.
func TestBufferCapacityAlert(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Workers that cannot start: the supervisors serve, nothing consumes.
	kv, _ := e.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	for _, id := range []string{"n1", "n2"} {
		if _, err := kv.Put(ctx, id, []byte(`{"config_version":"stuck","fail_start":true}`)); err != nil {
			t.Fatal(err)
		}
		startNodeNoWait(t, e, e.fastConfig(id))
	}
	buffer := func(node, client string, n int) {
		for i := range n {
			m := nats.NewMsg(schema.RequestSubject(node, client))
			m.Header.Set(schema.HeaderReplyTo, "_INBOX.test")
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-%s-%d", node, client, i))
			m.Data = []byte(`{"op":"task.list","args":{}}`)
			if _, err := e.bs.JetStream().PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	buffer("n1", "c1", 85)
	buffer("n2", "c2", 60)
	buffer("n2", "c3", 50)
	a := awaitAlert(t, e, schema.AlertBufferCapacity, "n1", firing, 1)
	if a.Details["client_id"] != "c1" || a.Details["buffered"].(float64) < 80 {
		t.Fatalf("n1's alert: %+v, want client c1 with at least 80 buffered", a.Details)
	}
	a = awaitAlert(t, e, schema.AlertBufferCapacity, "n2", firing, 1)
	if a.Details["client_id"] != nil || a.Details["total_buffered"].(float64) <= 100 {
		t.Fatalf("n2's alert: %+v, want over 100 in all and no client named", a.Details)
	}
	time.Sleep(time.Second) // two more checks: the conditions hold, nothing more is raised
	wantAlerts(t, e, schema.AlertBufferCapacity, "n1", firing, 1)
	wantAlerts(t, e, schema.AlertBufferCapacity, "n2", firing, 1)

	// Fixed, the nodes serve again and answer what waited.
	for _, id := range []string{"n1", "n2"} {
		if err := kv.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, id+" restarted on a configuration that works", func() bool {
			var r schema.RestartResult
			return e.req(id, schema.OpRestart, map[string]any{"reason": "configuration_update"}, &r) == nil && r.Success
		})
	}
	for _, id := range []string{"n1", "n2"} {
		r := awaitAlert(t, e, schema.AlertBufferCapacity, id, resolved, 1)
		if r.Details["total_buffered"].(float64) > 100 {
			t.Fatalf("%s resolved with %v", id, r.Details)
		}
		wantAlerts(t, e, schema.AlertBufferCapacity, id, firing, 1)
	}
}

// The snapshot alerts: backup_age (none while the node is younger than the
// maximum age; a node older with no backup; resolved by `state backup`;
// raised again once that backup ages) and state_size (a snapshot above the
// maximum; resolved by a later one under it, here the restore of a small
// backup).
func TestSnapshotAlertsFireAndResolve(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.BackupMaxAge = 4 * time.Second
	cfg.SnapshotInterval = time.Hour // backups only when asked for
	cfg.MaxStateSize = 2048
	started := time.Now()
	e.startNode(cfg)
	c := e.client("c1", "n1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	time.Sleep(time.Second) // two checks
	if age := time.Since(started); age < cfg.BackupMaxAge {
		wantAlerts(t, e, schema.AlertBackupAge, "n1", firing, 0)
	} else {
		t.Logf("node started slowly (%s): its backup_age may have fired", age)
	}
	none := awaitAlert(t, e, schema.AlertBackupAge, "n1", firing, 1)
	if _, ok := none.Details["node_started_at"]; !ok || time.Since(started) < cfg.BackupMaxAge {
		t.Fatalf("backup_age with no backup: %+v after %s", none, time.Since(started))
	}
	var small schema.SnapshotInfo
	if err := e.req("n1", schema.OpStateBackup, nil, &small); err != nil {
		t.Fatal(err)
	}
	awaitAlert(t, e, schema.AlertBackupAge, "n1", resolved, 1)

	for i := range 50 {
		if _, err := c.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("task %d of a state above 2 KiB", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var big schema.SnapshotInfo
	if err := e.req("n1", schema.OpStateBackup, nil, &big); err != nil {
		t.Fatal(err)
	}
	if small.SizeBytes > cfg.MaxStateSize || big.SizeBytes <= cfg.MaxStateSize {
		t.Fatalf("snapshots of %d and %d bytes: want one under %d and one above", small.SizeBytes, big.SizeBytes, cfg.MaxStateSize)
	}
	size := awaitAlert(t, e, schema.AlertStateSize, "n1", firing, 1)
	if size.Details["size_bytes"] != float64(big.SizeBytes) {
		t.Fatalf("state_size details %v, want the %d bytes of %s", size.Details, big.SizeBytes, big.SnapshotID)
	}
	var rs schema.StateRestore
	if err := e.req("n1", schema.OpStateRestore, map[string]any{"backup": small.SnapshotID, "confirm": true}, &rs); err != nil || !rs.Restart.Success {
		t.Fatalf("restore of the small backup: %+v %v", rs.Restart, err)
	}
	awaitAlert(t, e, schema.AlertStateSize, "n1", resolved, 1)
	wantAlerts(t, e, schema.AlertStateSize, "n1", firing, 1) // the archive of the big state, above too, raised nothing more

	// The restore's snapshot is the newest backup now; nothing is taken
	// after it, and it ages.
	old := awaitAlert(t, e, schema.AlertBackupAge, "n1", firing, 2)
	if old.Details["snapshot_id"] == nil {
		t.Fatalf("backup_age of an old backup: %+v", old.Details)
	}
}

// log_size: the node's log file (LogDir/<node>.log) above the maximum, and
// back under it once the operator truncates it.
func TestLogSizeAlertFiresAndResolves(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.LogMaxSize = 64 << 10
	e.startNode(cfg)
	path := filepath.Join(cfg.LogDir, "n1.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("the node's log file: %v", err)
	}
	line := []byte("a worker that logs a lot\n")
	for range (100 << 10) / len(line) {
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	_ = f.Close()
	a := awaitAlert(t, e, schema.AlertLogSize, "n1", firing, 1)
	if a.Details["path"] != path {
		t.Fatalf("log_size details %v", a.Details)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	awaitAlert(t, e, schema.AlertLogSize, "n1", resolved, 1)
	wantAlerts(t, e, schema.AlertLogSize, "n1", firing, 1)
}

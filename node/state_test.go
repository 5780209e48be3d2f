package node_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

func TestSchemaMigrationRestartMigratesV1State(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.StateSchema = 1 // this binary was told to write the old format
	e.startNode(cfg)
	c := e.client("c1", "n1")
	l := newLedger()
	createTasks(t, l, 100, 2, func(i int) schema.TaskCreateArgs { return schema.TaskCreateArgs{Title: fmt.Sprintf("t%d", i)} }, c)
	var info schema.SnapshotInfo
	if err := e.req("n1", schema.OpStateBackup, nil, &info); err != nil || info.SchemaVersion != 1 {
		t.Fatalf("backup in v1: %+v %v", info, err)
	}
	// A plain restart keeps the node on its schema.
	if r := e.restart("n1", map[string]any{}); !r.Success || r.State.SchemaVersion != 1 || r.State.MigratedFrom != 0 {
		t.Fatalf("plain restart: %+v", r.State)
	}
	r := e.restart("n1", map[string]any{"reason": "schema_migration", "timeout": 120})
	if !r.Success || r.State.SchemaVersion != 2 || r.State.MigratedFrom != 1 || r.State.TasksRestored != 100 {
		t.Fatalf("migration restart: %+v %+v", r.State, r.Error)
	}
	if h := e.health("n1"); h.StateSchemaVersion != 2 {
		t.Fatalf("health reports schema %d after migration", h.StateSchemaVersion)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, _ := e.bs.ListSnapshots(ctx, "n1")
	if list[0].SchemaVersion != 2 || list[0].Trigger != "migration" {
		t.Fatalf("newest snapshot after migration: %+v", list[0])
	}
	l.check(t, c)
}

func TestConfigurationUpdateLoadsNewConfig(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	if v := e.health("n1").ConfigVersion; v != "0" {
		t.Fatalf("initial config_version %q", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := e.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "n1", []byte(`{"config_version":"2026-11-27.1","settings":{"max_jobs":4}}`)); err != nil {
		t.Fatal(err)
	}
	if r := e.restart("n1", map[string]any{}); r.State.ConfigVersion != "0" {
		t.Fatalf("a manual restart loaded the new configuration: %q", r.State.ConfigVersion)
	}
	r := e.restart("n1", map[string]any{"reason": "configuration_update", "timeout": 60})
	if !r.Success || r.State.ConfigVersion != "2026-11-27.1" {
		t.Fatalf("configuration_update: %+v", r.State)
	}
	if v := e.health("n1").ConfigVersion; v != "2026-11-27.1" {
		t.Fatalf("health config_version %q after update", v)
	}
	// A bad configuration is refused and the node keeps the one it has.
	if _, err := kv.Put(ctx, "n1", []byte(`{"config_version":"3","bogus":1}`)); err != nil {
		t.Fatal(err)
	}
	r = e.restart("n1", map[string]any{"reason": "configuration_update"})
	if !r.Success || r.State.ConfigVersion != "2026-11-27.1" || !strings.Contains(strings.Join(r.Errors, " "), "bogus") {
		t.Fatalf("bad configuration: %+v %v", r.State, r.Errors)
	}
}

func TestBackupsAndRestoreDiscardLaterWrites(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	ctx := context.Background()
	keep, _ := c.CreateTask(ctx, schema.TaskCreateArgs{Title: "before backup"})
	var backup schema.SnapshotInfo
	if err := e.req("n1", schema.OpStateBackup, nil, &backup); err != nil || backup.Tasks != 1 {
		t.Fatalf("backup: %+v %v", backup, err)
	}
	later, _ := c.CreateTask(ctx, schema.TaskCreateArgs{Title: "after backup"})
	p := 50.0
	if _, err := c.UpdateTask(ctx, schema.TaskUpdateArgs{TaskID: keep.TaskID, Progress: &p}); err != nil {
		t.Fatal(err)
	}
	var list schema.BackupList
	if err := e.req("n1", schema.OpStateBackups, nil, &list); err != nil || len(list.Backups) != 1 || list.Backups[0].SnapshotID != backup.SnapshotID {
		t.Fatalf("backups: %+v %v", list, err)
	}
	var res schema.StateRestore
	if err := e.req("n1", schema.OpStateRestore, map[string]any{"backup": "1", "confirm": true}, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Restart.Success || res.RestoredTo.SnapshotID != backup.SnapshotID || res.ArchivedAs.Tasks != 2 {
		t.Fatalf("restore: %+v", res)
	}
	d := res.Discarded
	if len(d.TasksCreated) != 1 || d.TasksCreated[0] != later.TaskID || len(d.TasksChanged) != 1 || d.TasksChanged[0] != keep.TaskID || d.JournalWrites != 2 {
		t.Fatalf("discard report %+v", d)
	}
	all, err := c.AllTasks(ctx)
	if err != nil || len(all) != 1 || all[0].TaskID != keep.TaskID || all[0].Progress != 0 {
		t.Fatalf("after restore: %+v %v", all, err)
	}
	// The rollback holds across another restart (the discarded journal is not replayed),
	// and the archived state is a backup one can restore in turn.
	e.restart("n1", map[string]any{"graceful": false})
	if all, _ := c.AllTasks(ctx); len(all) != 1 {
		t.Fatalf("after a restart the discarded writes came back: %d tasks", len(all))
	}
	if err := e.req("n1", schema.OpStateRestore, map[string]any{"backup": res.ArchivedAs.SnapshotID, "confirm": true}, &res); err != nil {
		t.Fatal(err)
	}
	if all, _ := c.AllTasks(ctx); len(all) != 2 {
		t.Fatalf("restoring the archive gave %d tasks, want 2", len(all))
	}
}

func TestGracefulTimeoutContinuesAsEmergency(t *testing.T) {
	if testing.Short() {
		t.Skip("takes the minimum restart timeout (10 s)")
	}
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	l := newLedger()
	createTasks(t, l, 20, 1, func(int) schema.TaskCreateArgs { return schema.TaskCreateArgs{Title: "t"} }, c)
	// A step longer than the suspension timeout holds the drain in suspending_tasks for ~1 s.
	if _, err := c.CreateTask(context.Background(), schema.TaskCreateArgs{Title: "slow", Job: &schema.Job{Kind: "steps", Steps: 2, StepSeconds: 5}}); err != nil {
		t.Fatal(err)
	}
	pid := e.health("n1").WorkerPID
	done := make(chan schema.RestartResult, 1)
	go func() { done <- e.restart("n1", map[string]any{"timeout": 10}) }()
	waitFor(t, 5*time.Second, "the drain to be suspending jobs", func() bool {
		var st schema.RestartStatus
		return e.req("n1", schema.OpRestartStatus, nil, &st) == nil && st.CurrentStatus.Phase == schema.PhaseSuspendingTasks
	})
	// Freeze the worker mid-drain: it will never finish the graceful part.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if !r.Success || r.Graceful || !strings.Contains(strings.Join(r.Errors, " "), "exceeded the 10s timeout") {
		t.Fatalf("timeout path: %+v", r)
	}
	if r.Duration < 10 || r.Duration > 20 {
		t.Fatalf("duration %.1fs, want a little over the 10 s timeout", r.Duration)
	}
	l.check(t, c)
}

func TestStatusPrepareAndReconnectTestReportMeasuredFigures(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	c := e.client("c1", "n1")
	if _, err := c.CreateTask(context.Background(), schema.TaskCreateArgs{Title: "job", Job: &schema.Job{Kind: "steps", Steps: 100, StepSeconds: 0.1}}); err != nil {
		t.Fatal(err)
	}
	var pr schema.ShutdownReadiness
	if err := e.req("n1", schema.OpPrepare, nil, &pr); err != nil {
		t.Fatal(err)
	}
	if !pr.ReadyForShutdown || pr.Checks.ActiveTasks.Count != 1 || pr.Checks.ClientConnections.ActiveConnections != 1 || pr.Checks.Database.ConnectionsOpen != 2 {
		t.Fatalf("prepare: %+v %+v %+v %+v", pr, pr.Checks.ActiveTasks, pr.Checks.ClientConnections, pr.Checks.Database)
	}
	var rt schema.ReconnectTest
	if err := e.req("n1", schema.OpReconnectTest, nil, &rt); err != nil {
		t.Fatal(err)
	}
	if rt.OverallStatus != schema.StatusPass || rt.Results.AllSessions.ReachableSessions != 1 || rt.Results.AllSessions.ReconnectCapable != 1 {
		t.Fatalf("reconnect test: %+v %+v", rt, rt.Results.AllSessions)
	}
	// A client that has gone is not reachable, and an unknown session fails.
	_ = c.Close()
	if err := e.req("n1", schema.OpReconnectTest, nil, &rt); err != nil {
		t.Fatal(err)
	}
	if rt.Results.AllSessions.ReachableSessions != 0 || rt.OverallStatus != schema.StatusFail {
		t.Fatalf("gone client: %+v overall %s", rt.Results.AllSessions, rt.OverallStatus)
	}
	if err := e.req("n1", schema.OpReconnectTest, map[string]any{"session_id": "nobody"}, &rt); err != nil {
		t.Fatal(err)
	}
	if rt.OverallStatus != schema.StatusFail || rt.Results.SessionTest.Known {
		t.Fatalf("unknown session: %+v", rt.Results.SessionTest)
	}
	// History survives a restart of the whole node (supervisor too).
	e.restart("n1", map[string]any{"reason": "dr_test"})
	var st schema.RestartStatus
	if err := e.req("n1", schema.OpRestartStatus, map[string]any{"include_history": true}, &st); err != nil {
		t.Fatal(err)
	}
	if st.History.TotalRestarts != 1 || st.History.RecentRestarts[0].Reason != schema.ReasonDRTest || st.History.LastSuccessfulRestart == nil {
		t.Fatalf("history: %+v", st.History)
	}
}

func TestFailedConfigurationUpdateRollsBackAndRecovers(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := e.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "n1", []byte(`{"config_version":"broken","fail_start":true}`)); err != nil {
		t.Fatal(err)
	}
	r := e.restart("n1", map[string]any{"reason": "configuration_update"})
	if r.Success || r.Phase != schema.PhaseFailed || r.Error == nil || r.Error.Code != schema.CodeProcessFailed {
		t.Fatalf("a worker that cannot start was reported as %+v", r)
	}
	if !strings.Contains(strings.Join(r.Errors, " "), "fail_start") || !strings.Contains(strings.Join(r.Errors, " "), "rolled back to 0") {
		t.Fatalf("errors do not quote the worker's log and the rollback: %v", r.Errors)
	}
	// Never left without a worker: the supervisor recovers on the last good configuration.
	waitFor(t, 20*time.Second, "recovery on the previous configuration", func() bool {
		h := e.health("n1")
		return h.Healthy && h.ConfigVersion == "0"
	})
}

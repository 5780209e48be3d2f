package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

const demoUsage = "restartcoord demo [--tasks 300] [--keep]"

// demoRow is one line of the demo's table.
type demoRow struct {
	name, kind            string
	duration              time.Duration
	oldPID, newPID        int
	tasksBefore, tasksNow int
	sessBefore, sessNow   int
	stepsBefore, stepsNow int
	lost                  int
	note                  string
}

// demo drives one node through every kind of restart while clients keep
// writing, and checks after each that every acknowledged write is there.
type demo struct {
	conn   *bus.Conn
	nc     *nats.Conn
	bs     *bus.Store
	node   string
	reader *client.Client
	jobID  string
	out    io.Writer

	mu    sync.Mutex
	acked map[string]schema.Task // the demo's own record of what clients were told
	calls int
}

func runDemo(ctx context.Context, args []string) error {
	fs := newFlags("demo", demoUsage)
	nTasks := fs.Int("tasks", 300, "tasks to create before the restarts")
	keep := fs.Bool("keep", false, "keep the data directory (printed at the end)")
	pos, err := parse(fs, args, demoUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %v (usage: %s)", pos, demoUsage)
	}
	if *nTasks < 1 || *nTasks > 100000 {
		return usageErr("--tasks must be 1..100000, got %d", *nTasks)
	}
	dir, err := os.MkdirTemp("", "restartcoord-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	started := time.Now()
	fmt.Printf("restartcoord demo: embedded NATS with JetStream (synced writes) in %s\n", dir)
	srv, err := embeddedNATS(ctx, dir, 0, nil)
	if err != nil {
		return err
	}
	defer srv.Stop()

	cfg := node.DefaultConfig("demo-1")
	cfg.NATS.URL, cfg.Version, cfg.LogDir = srv.URL(), version, filepath.Join(dir, "logs")
	cfg.StateSchema = 1 // the node starts on the old state format, so schema_migration has work
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		return err
	}
	nodeCtx, stopNode := context.WithCancel(context.WithoutCancel(ctx))
	ready, nodeDone := make(chan struct{}), make(chan error, 1)
	go func() { nodeDone <- sup.Run(nodeCtx, ready) }()
	defer func() {
		stopNode()
		<-nodeDone
	}()
	select {
	case <-ready:
	case err := <-nodeDone:
		return err
	}
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: srv.URL(), Name: "restartcoord-demo"})
	if err != nil {
		return err
	}
	defer conn.Close()
	bs, err := bus.NewStore(conn)
	if err != nil {
		return err
	}
	d := &demo{conn: conn, nc: conn.Conn, bs: bs, node: "demo-1", acked: map[string]schema.Task{}, out: os.Stdout}
	if d.reader, err = client.New(conn.Conn, "demo-reader", d.node); err != nil {
		return err
	}
	defer d.reader.Close()
	fmt.Printf("node demo-1 ready (worker pid %d, state schema 1); creating %d tasks from 3 clients and a 60-step job...\n",
		d.health(ctx).WorkerPID, *nTasks)
	if err := d.seed(ctx, *nTasks); err != nil {
		return err
	}
	stopLoad := make(chan struct{})
	var stopOnce sync.Once
	stopLoading := func() { stopOnce.Do(func() { close(stopLoad) }) }
	loadDone := make(chan error, 1)
	go func() { loadDone <- d.load(ctx, stopLoad) }()

	steps := []struct {
		name, kind string
		run        func(ctx context.Context) (demoRow, error)
	}{
		{"graceful", "manual_request", d.restartStep(map[string]any{"reason": "manual_request"})},
		{"emergency", "emergency_shutdown", d.restartStep(map[string]any{"graceful": false, "preserve_state": false, "reason": "emergency_shutdown", "timeout": 15})},
		{"schema migration", "schema_migration", d.restartStep(map[string]any{"reason": "schema_migration", "timeout": 120})},
		{"config update", "configuration_update", d.configStep},
		{"worker SIGKILL", "crash_recovery", d.signalStep(syscall.SIGKILL)},
		{"worker SIGSTOP", "crash_recovery", d.signalStep(syscall.SIGSTOP)},
	}
	var rows []demoRow
	for i, s := range steps {
		fmt.Printf("  [%d/%d] %s restart...\n", i+1, len(steps), s.name)
		before := d.counts(ctx)
		row, err := s.run(ctx)
		if err != nil {
			stopLoading()
			return fmt.Errorf("%s restart: %w", s.name, err)
		}
		after := d.counts(ctx)
		row.name, row.kind = s.name, s.kind
		row.tasksBefore, row.sessBefore, row.stepsBefore = before.tasks, before.sessions, before.steps
		row.tasksNow, row.sessNow, row.stepsNow = after.tasks, after.sessions, after.steps
		if row.lost, err = d.lost(ctx, false); err != nil {
			stopLoading()
			return err
		}
		rows = append(rows, row)
	}
	stopLoading() // the loader finishes the call in hand first: every call it made is answered
	if err := <-loadDone; err != nil {
		return fmt.Errorf("client load: %w", err)
	}
	jobOK, jobNote := d.checkJob(ctx)
	lost, err := d.lost(ctx, true)
	if err != nil {
		return err
	}
	d.table(rows)
	d.mu.Lock()
	calls, tasks := d.calls, len(d.acked)
	d.mu.Unlock()
	fmt.Printf("\nclient calls acknowledged: %d (none failed); tasks checked by content after every restart: %d; lost: %d\n", calls, tasks, lost)
	fmt.Printf("job: %s\n", jobNote)
	fmt.Printf("demo took %.1fs\n", time.Since(started).Seconds())
	if *keep {
		fmt.Printf("data kept in %s\n", dir)
	}
	for _, r := range rows {
		lost += r.lost
	}
	if lost > 0 || !jobOK {
		return &exitError{code: exitFailed, err: errors.New("demo FAILED: acknowledged state was lost or a job step ran twice across a graceful restart")}
	}
	return nil
}

func (d *demo) ack(t *schema.Task) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if prev, ok := d.acked[t.TaskID]; !ok || !prev.UpdatedAt.After(t.UpdatedAt) {
		d.acked[t.TaskID] = *t
	}
}

func (d *demo) seed(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for c := range 3 {
		cl, err := client.New(d.nc, fmt.Sprintf("demo-client-%d", c+1), d.node)
		if err != nil {
			return err
		}
		defer cl.Close()
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < n; i += 3 {
				t, err := cl.CreateTask(ctx, schema.TaskCreateArgs{Title: fmt.Sprintf("task %d", i), Description: "created by demo-client"})
				if err != nil {
					errc <- err
					return
				}
				d.ack(t)
			}
		}(c)
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	job, err := d.reader.CreateTask(ctx, schema.TaskCreateArgs{Title: "demo job", Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 60, StepSeconds: 0.1}})
	if err != nil {
		return err
	}
	d.jobID = job.TaskID
	return nil
}

// load keeps a client updating tasks through every restart, until stop;
// it never abandons a call, so what it was told is all the node did.
func (d *demo) load(ctx context.Context, stop <-chan struct{}) error {
	cl, err := client.New(d.nc, "demo-load", d.node)
	if err != nil {
		return err
	}
	defer cl.Close()
	var ids []string
	d.mu.Lock()
	for id := range d.acked {
		if len(ids) < 20 {
			ids = append(ids, id)
		}
	}
	d.mu.Unlock()
	for i := 0; ; i++ {
		p := float64(i%100) + 0.5
		t, err := cl.UpdateTask(ctx, schema.TaskUpdateArgs{TaskID: ids[i%len(ids)], Progress: &p})
		if err != nil {
			return err
		}
		d.ack(t)
		select {
		case <-stop:
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (d *demo) health(ctx context.Context) schema.Health {
	var h schema.Health
	_ = d.conn.RequestJSON(ctx, schema.NodeSubject(d.node, schema.OpHealth), nil, nil, &h)
	return h
}

type demoCounts struct{ tasks, sessions, steps int }

func (d *demo) counts(ctx context.Context) demoCounts {
	var c demoCounts
	if all, err := d.reader.AllTasks(ctx); err == nil {
		c.tasks = len(all)
	}
	var rt schema.ReconnectTest
	if d.conn.RequestJSON(ctx, schema.NodeSubject(d.node, schema.OpReconnectTest), nil, nil, &rt) == nil && rt.Results.AllSessions != nil {
		c.sessions = rt.Results.AllSessions.TotalSessions
	}
	if t, err := d.reader.GetTask(ctx, d.jobID); err == nil {
		c.steps = t.StepsDone
	}
	return c
}

// lost compares, by content, every acknowledged task with what the node
// holds. The record is copied before the read: everything in the copy was
// acknowledged, so applied, before the read began, and the read must show
// it (or, while the load goes on, a later version of it). Once the load has
// stopped (exact), each task must be exactly the last acknowledged version.
func (d *demo) lost(ctx context.Context, exact bool) (int, error) {
	d.mu.Lock()
	want := make(map[string]schema.Task, len(d.acked))
	for id, t := range d.acked {
		want[id] = t
	}
	d.mu.Unlock()
	all, err := d.reader.AllTasks(ctx)
	if err != nil {
		return 0, err
	}
	got := make(map[string]schema.Task, len(all))
	for _, t := range all {
		got[t.TaskID] = t
	}
	lost := 0
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			lost++
		case g.Equal(&w):
		case exact || g.UpdatedAt.Before(w.UpdatedAt):
			lost++
		}
	}
	return lost, nil
}

func (d *demo) restartStep(body map[string]any) func(ctx context.Context) (demoRow, error) {
	return func(ctx context.Context) (demoRow, error) {
		var r schema.RestartResult
		if err := d.conn.RequestJSON(ctx, schema.NodeSubject(d.node, schema.OpRestart), body, nil, &r); err != nil {
			return demoRow{}, err
		}
		if !r.Success {
			return demoRow{}, fmt.Errorf("restart failed: %v %v", r.Error, r.Errors)
		}
		row := demoRow{duration: schema.Seconds(r.Duration), oldPID: r.OldPID, newPID: r.NewPID}
		switch {
		case r.State.MigratedFrom != 0:
			row.note = fmt.Sprintf("state schema %d -> %d", r.State.MigratedFrom, r.State.SchemaVersion)
		case r.State.SnapshotWritten:
			row.note = fmt.Sprintf("snapshot %d KiB verified, %d journal entries replayed", r.State.SizeBytes>>10, r.State.JournalReplayed)
		default:
			row.note = fmt.Sprintf("no drain, no snapshot: %d journal entries replayed", r.State.JournalReplayed)
		}
		if r.BufferedRequestsReplayed > 0 {
			row.note += fmt.Sprintf(", %d buffered requests answered after", r.BufferedRequestsReplayed)
		}
		return row, nil
	}
}

func (d *demo) configStep(ctx context.Context) (demoRow, error) {
	kv, err := d.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if err != nil {
		return demoRow{}, err
	}
	before := d.health(ctx).ConfigVersion
	if _, err := kv.Put(ctx, d.node, []byte(`{"config_version":"demo-2","settings":{"max_jobs":8}}`)); err != nil {
		return demoRow{}, err
	}
	row, err := d.restartStep(map[string]any{"reason": "configuration_update", "timeout": 60})(ctx)
	if err != nil {
		return row, err
	}
	after := d.health(ctx).ConfigVersion
	if after != "demo-2" {
		return row, fmt.Errorf("config_version is %q after the update, want demo-2", after)
	}
	row.note = fmt.Sprintf("config_version %s -> %s", before, after)
	return row, nil
}

// signalStep signals the worker behind the supervisor's back and measures
// until a new worker serves.
func (d *demo) signalStep(sig syscall.Signal) func(ctx context.Context) (demoRow, error) {
	return func(ctx context.Context) (demoRow, error) {
		old := d.health(ctx).WorkerPID
		t0 := time.Now()
		if err := syscall.Kill(old, sig); err != nil {
			return demoRow{}, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			h := d.health(ctx)
			if h.Healthy && h.WorkerPID != old && h.WorkerPID != 0 {
				row := demoRow{duration: time.Since(t0), oldPID: old, newPID: h.WorkerPID}
				if sig == syscall.SIGSTOP {
					row.note = "frozen worker caught by the watchdog, killed, replaced"
				} else {
					row.note = "crash noticed at once, worker replaced with backoff"
				}
				return row, nil
			}
			if time.Now().After(deadline) {
				return demoRow{}, fmt.Errorf("no new worker 30s after %s", sig)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// checkJob waits for the job and counts its steps' effects: across graceful
// restarts each step runs once; a kill may re-run the step in flight.
func (d *demo) checkJob(ctx context.Context) (bool, string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if t, err := d.reader.GetTask(ctx, d.jobID); err == nil && t.Status == schema.TaskCompleted {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	runs := map[int]int{}
	_ = d.bs.ReadSubject(ctx, schema.StreamEvents, schema.NodeEventSubject(d.node, schema.EventJobStep), func(data []byte) error {
		var ev struct {
			TaskID string `json:"task_id"`
			Step   int    `json:"step"`
		}
		if jsonUnmarshal(data, &ev) == nil && ev.TaskID == d.jobID {
			runs[ev.Step]++
		}
		return nil
	})
	missing, twice := 0, []string{}
	for s := 1; s <= 60; s++ {
		switch n := runs[s]; {
		case n == 0:
			missing++
		case n > 1:
			twice = append(twice, fmt.Sprint(s))
		}
	}
	note := fmt.Sprintf("60 steps, %d ran, %d missing", len(runs), missing)
	if len(twice) > 0 {
		note += fmt.Sprintf("; step(s) %s ran twice (in flight when the worker was killed: allowed for emergency restarts)", strings.Join(twice, ","))
	} else {
		note += ", every step exactly once"
	}
	return missing == 0, note
}

func (d *demo) table(rows []demoRow) {
	fmt.Println()
	w := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "#\trestart\treason\tduration\told pid\tnew pid\ttasks before/after\tsessions before/after\tjob steps\tlost\tnotes")
	for i, r := range rows {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%d\t%d/%d\t%d/%d\t%d->%d\t%d\t%s\n", i+1, r.name, r.kind,
			r.duration.Round(time.Millisecond), r.oldPID, r.newPID, r.tasksBefore, r.tasksNow, r.sessBefore, r.sessNow,
			r.stepsBefore, r.stepsNow, r.lost, r.note)
	}
	_ = w.Flush()
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

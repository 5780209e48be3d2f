package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// RunConfig is one seeded run of faults.
type RunConfig struct {
	Seed     uint64
	Duration time.Duration
	// Kinds of faults to draw from (all of Faults).
	Kinds []string
	// ClientsPerNode making calls without pause (2), besides one making jobs.
	ClientsPerNode int
	// RollEvery: a roll of every node starts this long after the last one
	// ended (3 s), so the run keeps rolling (roll.go).
	RollEvery time.Duration
	// FaultEvery is the cadence of faults and FaultGap the least time from
	// a fault's recovery to the next (DefaultFaultEvery, DefaultFaultGap).
	FaultEvery, FaultGap time.Duration
	// JobEvery: each node gets a new 20-step job this often (15 s).
	JobEvery time.Duration
	// RecoveryLimit: every node healthy again this long after the last
	// fault heals (30 s).
	RecoveryLimit time.Duration
	Logf          func(format string, args ...any)
}

func (rc *RunConfig) defaults() {
	if len(rc.Kinds) == 0 {
		rc.Kinds = Faults
	}
	if rc.ClientsPerNode == 0 {
		rc.ClientsPerNode = 2
	}
	if rc.RollEvery == 0 {
		rc.RollEvery = 3 * time.Second
	}
	if rc.FaultEvery == 0 {
		rc.FaultEvery = DefaultFaultEvery
	}
	if rc.FaultGap == 0 {
		rc.FaultGap = DefaultFaultGap
	}
	if rc.JobEvery == 0 {
		rc.JobEvery = 15 * time.Second
	}
	if rc.RecoveryLimit == 0 {
		rc.RecoveryLimit = 30 * time.Second
	}
	if rc.Logf == nil {
		rc.Logf = func(string, ...any) {}
	}
}

// FaultRecord is what the harness did and saw for one fault.
type FaultRecord struct {
	Kind, Target string
	At           time.Duration // since the run began
	Held         time.Duration
	Recovery     time.Duration // from heal to the target healthy again; -1 if it never was
	Note         string
	Err          string
}

// Report is a run's outcome.
type Report struct {
	Seed         uint64
	Duration     time.Duration
	Faults       []FaultRecord
	Verdicts     []Verdict
	Escalations  []string // every quarantine and breaker opening
	Calls, Acked int
	Errors       map[string]int
	ErrorSamples []string
	Rolls        int // rolls the harness started (found started, if their start went unanswered)
	RollRefusals map[string]int
	RollOutcomes []string // each roll's final state
	Exits        []string // processes that exited on their own (restarted as systemd would)
	// RollUnanswered starts had no answer in time; RollNeverMade of them
	// were not found afterwards (roll.status NOT_FOUND at the end).
	RollUnanswered, RollNeverMade int
	// RollsCompleted ended completed; RollsPaused were paused at some time;
	// RollsResumed counts the coordinator's automatic resumes; RollsAborted
	// were aborted by the harness, paused for longer than 60 s.
	RollsCompleted, RollsPaused, RollsResumed, RollsAborted int
}

// Failed reports whether any invariant failed.
func (r *Report) Failed() bool {
	for _, v := range r.Verdicts {
		if !v.Pass {
			return true
		}
	}
	return false
}

// Run runs a seeded schedule of faults against c under client load and
// rolls, heals everything, then checks every invariant against the
// harness's own record and what JetStream holds.
func Run(ctx context.Context, c *Cluster, rc RunConfig) (*Report, error) {
	rc.defaults()
	plan := newFaultPlan(rc.Seed, rc.Kinds)
	rep := &Report{Seed: rc.Seed}
	jtap, err := c.tapJournal(ctx)
	if err != nil {
		return nil, fmt.Errorf("chaos: journal tap: %w", err)
	}
	defer jtap.stop()
	probe := c.startProber(ctx, 250*time.Millisecond)
	load, err := c.StartLoad(ctx, rc.ClientsPerNode, rc.JobEvery)
	if err != nil {
		probe.stop()
		return nil, err
	}
	rolls := c.startRoller(ctx, rc.RollEvery, rc.Logf)
	start := time.Now()
	lastHeal := start
	runSchedule(rc.Duration, rc.FaultEvery, rc.FaultGap, func(due time.Duration) bool {
		sleep(ctx, time.Until(start.Add(due)))
		return ctx.Err() == nil
	}, func() time.Duration {
		fr := c.oneFault(ctx, plan.next(c.Servers(), c.nodes), start)
		rep.Faults = append(rep.Faults, fr)
		lastHeal = start.Add(fr.At + fr.Held)
		rc.Logf("%7.1fs %-15s %-14s held %5.1fs recovered %s %s %s", fr.At.Seconds(), fr.Kind, fr.Target, fr.Held.Seconds(),
			fmtRecovery(fr.Recovery), fr.Note, fr.Err)
		return time.Since(start)
	})
	// The last fault may recover before the run's end: load and rolls go
	// on to the end, so a run lasts what it was asked to.
	sleep(ctx, time.Until(start.Add(rc.Duration)))
	rep.Duration = time.Since(start)
	// Every node healthy again within the limit after the last heal.
	rep.Verdicts = append(rep.Verdicts, c.checkRecovered(ctx, lastHeal, rc.RecoveryLimit))
	// The rolls under way end (or are aborted, paused too long) before the
	// end state is checked.
	book := rolls.stop(ctx, rollsEndWithin)
	rollIDs := book.started()
	rep.Rolls = len(rollIDs)
	rep.RollRefusals = book.refuse
	rep.RollUnanswered, rep.RollNeverMade = book.unanswered, len(book.lost)
	for _, id := range c.finishRolls(ctx, rollIDs, 10*time.Second) {
		rep.RollOutcomes = append(rep.RollOutcomes, "STUCK, aborted: "+id)
	}
	for _, t := range book.rolls {
		rep.RollOutcomes = append(rep.RollOutcomes, c.rollOutcome(ctx, t))
	}
	rep.RollsCompleted, rep.RollsPaused, rep.RollsResumed, rep.RollsAborted = book.counts()

	rec := load.Stop()
	seen := probe.stop()
	rep.Verdicts = append(rep.Verdicts, c.checkNoMaintenance(ctx))
	c.waitTap(jtap, rec, 15*time.Second)
	v1, v2 := checkRequests(rec, jtap)

	// Rebuild every node's state from JetStream alone, then read it back.
	reader, failedRestarts, err := c.rebuildAndRead(ctx)
	if err != nil {
		return nil, err
	}
	const restarts = "every emergency restart the harness asked for succeeded"
	if len(failedRestarts) > 0 {
		rep.Verdicts = append(rep.Verdicts, fail(restarts, "%s", strings.Join(failedRestarts, "; ")))
	} else {
		rep.Verdicts = append(rep.Verdicts, pass(restarts, "%d nodes rebuilt from JetStream alone", len(c.nodes)))
	}
	rep.Verdicts = append(rep.Verdicts, checkTasks(ctx, rec, func(node string) ([]schema.Task, error) { return reader[node], nil }), v1, v2)
	results, err := c.restartResults(ctx)
	if err != nil {
		return nil, err
	}
	// Workers the system itself ended abruptly: emergency restarts, and
	// graceful ones that did not finish gracefully.
	for _, r := range results {
		if !r.Graceful || !r.Success {
			c.abrupt.add(r.OldPID, "emergency restart "+r.RestartID)
		}
	}
	steps, err := c.readAll(ctx, schema.StreamEvents, schema.NodeEventSubject("*", schema.EventJobStep))
	if err != nil {
		return nil, fmt.Errorf("chaos: reading job steps: %w", err)
	}
	rep.Verdicts = append(rep.Verdicts, checkJobSteps(steps, jobTasks(rec, reader), &c.abrupt, workerStory(results)))
	rep.Verdicts = append(rep.Verdicts, checkBudget(results, rollIDs))
	c.termMu.Lock()
	terms := slices.Clone(c.terms)
	c.termMu.Unlock()
	rep.Verdicts = append(rep.Verdicts, checkFencing(results, terms))
	alerts, err := c.readAll(ctx, schema.StreamAlerts, schema.AlertsSubjects)
	if err != nil {
		return nil, fmt.Errorf("chaos: reading alerts: %w", err)
	}
	v, listed := checkJustified(alerts, seen, len(c.nodes))
	if h, err := c.ClusterHealth(ctx); err == nil {
		if l, bad := breakerAtEnd(h.CircuitBreaker, seen, len(c.nodes)); l != "" && !containsPrefix(listed, h.CircuitBreaker.OpenedAt.Format(time.TimeOnly)+" breaker open") {
			listed = append(listed, l)
			if bad != "" {
				v = fail(v.Name, "%s", bad)
			}
		}
	}
	rep.Verdicts = append(rep.Verdicts, v)
	rep.Escalations = listed

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ids := range rec.calls {
		rep.Calls += len(ids)
	}
	rep.Acked = len(rec.acked)
	rep.Exits = c.Exits()
	rep.Errors, rep.ErrorSamples = rec.errs, rec.errList
	return rep, nil
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func fmtRecovery(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// oneFault injects a drawn fault, holds it, heals it, and measures how long
// its target takes to be healthy again (up to faultRecoveryWait).
func (c *Cluster) oneFault(ctx context.Context, pf plannedFault, start time.Time) FaultRecord {
	kind, target, hold := pf.kind, pf.target, pf.hold
	fr := FaultRecord{Kind: kind, Target: target, At: time.Since(start), Recovery: -1}
	f, err := c.NewFault(kind, target)
	if err != nil {
		fr.Err = err.Error()
		return fr
	}
	if err := f.Inject(ctx); err != nil {
		fr.Err = "inject: " + err.Error()
		return fr
	}
	fr.Target = f.Target()
	sleep(ctx, hold)
	if kind == "partition-nats" {
		fr.Note = "isolated"
		if !c.Isolated(target, 0) {
			fr.Note = "NOT ISOLATED (a route went around the proxies)"
		}
	}
	if err := f.Heal(ctx); err != nil {
		fr.Err = "heal: " + err.Error()
	}
	healed := time.Now()
	fr.Held = healed.Sub(start) - fr.At
	held, err := c.waitRecovered(ctx, kind, fr.Target, faultRecoveryWait)
	if err == nil {
		fr.Recovery = time.Since(healed)
		if fr.Recovery > slowRecovery && held != "" {
			fr.Note = strings.TrimSpace(fr.Note + " last waited on: " + held)
		}
	} else {
		fr.Err += err.Error()
	}
	return fr
}

// slowRecovery: a recovery longer than this is reported with what the
// harness was still waiting on just before it.
const slowRecovery = 5 * time.Second

// waitRecovered waits until the fault's target is healthy again: the node
// for a node fault; every node and a leader for the others.
func (c *Cluster) waitRecovered(ctx context.Context, kind, target string, within time.Duration) (held string, err error) {
	recovered := poll(ctx, within, func() bool {
		switch kind {
		case "kill-worker", "kill-node", "stop-worker", "stop-node", "partition-node":
			h, err := c.Health(ctx, target)
			held = healthWhy(h, err)
			return held == ""
		}
		if bad := c.unhealthyAny(ctx); len(bad) > 0 {
			held = fmt.Sprint(bad)
			return false
		}
		h, err := c.ClusterHealth(ctx)
		switch {
		case err != nil:
			held = "cluster health: " + err.Error()
		case h.Leader == "":
			held = "cluster health: no leader"
		default:
			return true
		}
		return false
	})
	if !recovered {
		return held, fmt.Errorf("%s not recovered within %s: unhealthy %v", target, within, c.Unhealthy(ctx))
	}
	return held, nil
}

// healthWhy says why a health answer is not healthy ("" when it is).
func healthWhy(h schema.Health, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case !h.Healthy:
		return "unhealthy, phase " + string(h.Phase)
	}
	return ""
}

// unhealthyAny says, of each node not answering healthy (any phase), why.
func (c *Cluster) unhealthyAny(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, id := range c.nodes {
		h, err := c.Health(ctx, id)
		if why := healthWhy(h, err); why != "" {
			out[id] = why
		}
	}
	return out
}

func (c *Cluster) checkRecovered(ctx context.Context, lastHeal time.Time, limit time.Duration) Verdict {
	name := fmt.Sprintf("every node healthy within %s of the last heal", limit)
	left := time.Until(lastHeal.Add(limit))
	if err := c.WaitHealthy(ctx, max(left, 0)); err != nil {
		return fail(name, "%v", err)
	}
	return pass(name, "all %d nodes healthy and idle %.1fs after the last heal", len(c.nodes), time.Since(lastHeal).Seconds())
}

func (c *Cluster) checkNoMaintenance(ctx context.Context) Verdict {
	const name = "no node left in maintenance mode"
	var bad []string
	for _, id := range c.nodes {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var st schema.RestartStatus
		err := c.obs().RequestJSON(cctx, schema.NodeSubject(id, schema.OpRestartStatus), map[string]any{}, nil, &st)
		cancel()
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", id, err))
		case st.CurrentStatus.MaintenanceMode || st.CurrentStatus.Phase != schema.PhaseIdle:
			bad = append(bad, fmt.Sprintf("%s in %s (maintenance %v)", id, st.CurrentStatus.Phase, st.CurrentStatus.MaintenanceMode))
		}
	}
	if len(bad) > 0 {
		return fail(name, "%v", bad)
	}
	return pass(name, "all %d nodes idle, maintenance mode off", len(c.nodes))
}

// waitTap waits until the journal tap has seen the last acknowledged
// request of every client.
func (c *Cluster) waitTap(t *tap, rec *Record, within time.Duration) {
	poll(context.Background(), within, func() bool { return tapCaughtUp(t, rec) })
}

func tapCaughtUp(t *tap, rec *Record) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ids := range rec.calls {
		for i := len(ids) - 1; i >= 0; i-- {
			if rec.acked[ids[i]] {
				if t.count[ids[i]] == 0 {
					return false
				}
				break
			}
		}
	}
	return true
}

// rebuildAndRead restarts every node as an emergency (no snapshot: the new
// worker rebuilds its state from JetStream's snapshots and journal alone),
// then reads every task of every node. A restart that fails is reported (as
// a failed verdict by the caller) and the node is read once it is healthy
// again, so the other invariants are still checked.
func (c *Cluster) rebuildAndRead(ctx context.Context) (map[string][]schema.Task, []string, error) {
	out := map[string][]schema.Task{}
	var failed []string
	for _, id := range c.nodes {
		req := schema.DefaultRestartRequest()
		req.Graceful, req.Reason = false, schema.ReasonErrorRecovery
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		var res schema.RestartResult
		err := c.obs().RequestJSON(cctx, schema.NodeSubject(id, schema.OpRestart), req, nil, &res)
		cancel()
		if err != nil || !res.Success {
			failed = append(failed, fmt.Sprintf("%s: %v %s %v", id, err, res.Message, res.Errors))
			if _, err := c.waitRecovered(ctx, "kill-worker", id, 60*time.Second); err != nil {
				return nil, failed, err
			}
		}
		cl, err := client.New(c.obs().Conn, "chaos-reader-"+id, id)
		if err != nil {
			return nil, failed, err
		}
		ts, err := readTasks(ctx, cl)
		cl.Close()
		if err != nil {
			return nil, failed, fmt.Errorf("chaos: reading %s's tasks: %w", id, err)
		}
		out[id] = ts
	}
	return out, failed, nil
}

func jobTasks(rec *Record, all map[string][]schema.Task) map[string][]schema.Task {
	out := map[string][]schema.Task{}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for node, ids := range rec.jobs {
		for _, t := range all[node] {
			if slices.Contains(ids, t.TaskID) {
				out[node] = append(out[node], t)
			}
		}
	}
	return out
}

func (c *Cluster) restartResults(ctx context.Context) ([]schema.RestartResult, error) {
	raw, err := c.readAll(ctx, schema.StreamEvents, schema.NodeEventSubject("*", schema.EventRestartResult))
	if err != nil {
		return nil, fmt.Errorf("chaos: reading restart results: %w", err)
	}
	out := make([]schema.RestartResult, 0, len(raw))
	for _, data := range raw {
		var r schema.RestartResult
		if json.Unmarshal(data, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

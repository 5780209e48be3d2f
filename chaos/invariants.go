package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// Verdict is one invariant's outcome.
type Verdict struct {
	Name   string
	Pass   bool
	Detail string
}

func pass(name, format string, a ...any) Verdict {
	return Verdict{Name: name, Pass: true, Detail: fmt.Sprintf(format, a...)}
}

func fail(name, format string, a ...any) Verdict {
	return Verdict{Name: name, Detail: fmt.Sprintf(format, a...)}
}

// readAll reads every message of stream matching filter, oldest first,
// through the first of the harness's connections that can (a server just
// restarted may not serve JetStream yet).
func (c *Cluster) readAll(ctx context.Context, stream, filter string) ([][]byte, error) {
	var errs []error
	for attempt := range 10 {
		for i, st := range c.stores {
			if c.down[i].Load() {
				continue
			}
			var out [][]byte
			err := st.ReadSubject(ctx, stream, filter, func(data []byte) error { out = append(out, data); return nil })
			if err == nil {
				return out, nil
			}
			errs = append(errs, fmt.Errorf("via %s (attempt %d): %w", c.servers[i].name, attempt+1, err))
		}
		time.Sleep(time.Second)
	}
	return nil, errors.Join(errs...)
}

// checkTasks compares every acknowledged task, by content, with the node's
// tasks, read after the node rebuilt its state from JetStream alone (the
// harness makes every node restart as an emergency, with no snapshot, first).
func checkTasks(ctx context.Context, rec *Record, read func(node string) ([]schema.Task, error)) Verdict {
	const name = "no acknowledged task mutation lost"
	total, lost, differ := 0, 0, 0
	var first []string
	for node, want := range rec.tasks {
		got, err := read(node)
		if err != nil {
			return fail(name, "reading %s's tasks: %v", node, err)
		}
		byID := make(map[string]schema.Task, len(got))
		for _, t := range got {
			byID[t.TaskID] = t
		}
		for id, w := range want {
			total++
			g, ok := byID[id]
			switch {
			case !ok:
				lost++
				first = append(first, fmt.Sprintf("%s/%s lost", node, id))
			case !g.Equal(&w):
				differ++
				first = append(first, fmt.Sprintf("%s/%s differs: acknowledged %s, found %s", node, id, taskBrief(&w), taskBrief(&g)))
			}
		}
	}
	if lost+differ > 0 {
		return fail(name, "%d of %d acknowledged tasks lost, %d differ: %s", lost, total, differ, strings.Join(first[:min(3, len(first))], "; "))
	}
	return pass(name, "%d acknowledged tasks, compared by content after an emergency restart of every node", total)
}

// taskBrief is what a report shows of a task that differs.
func taskBrief(t *schema.Task) string {
	return fmt.Sprintf("{status %s, checkpoint %s, updated %s}", t.Status, t.Checkpoint, t.UpdatedAt.UTC().Format("15:04:05.000"))
}

// checkRequests checks every acknowledged request id against the journal
// tap: journaled exactly once, and in each client's call order.
func checkRequests(rec *Record, t *tap) (Verdict, Verdict) {
	const once, order = "no acknowledged client request lost or applied twice", "per-client order kept"
	t.mu.Lock()
	defer t.mu.Unlock()
	pos := map[string]int{}
	for _, ids := range t.order {
		for i, id := range ids {
			if _, ok := pos[id]; !ok {
				pos[id] = i
			}
		}
	}
	acked, bad, disorder := 0, []string{}, []string{}
	for cl, ids := range rec.calls {
		last := -1
		for j, id := range ids {
			n := t.count[id]
			if !rec.acked[id] {
				if n > 1 {
					bad = append(bad, fmt.Sprintf("%s call %d journaled %d times (unanswered)", cl, j, n))
				}
				continue
			}
			acked++
			switch {
			case n == 0:
				bad = append(bad, fmt.Sprintf("%s call %d acknowledged, never journaled", cl, j))
			case n > 1:
				bad = append(bad, fmt.Sprintf("%s call %d journaled %d times", cl, j, n))
			}
			if p, ok := pos[id]; ok {
				if p < last {
					disorder = append(disorder, fmt.Sprintf("%s call %d journaled before call %d", cl, j, j-1))
				}
				last = p
			}
		}
	}
	v1 := pass(once, "%d acknowledged requests, each journaled exactly once", acked)
	if len(bad) > 0 {
		v1 = fail(once, "%d problems: %s", len(bad), strings.Join(bad[:min(3, len(bad))], "; "))
	}
	v2 := pass(order, "%d clients, each one's requests journaled in call order", len(rec.calls))
	if len(disorder) > 0 {
		v2 = fail(order, "%d out of order: %s", len(disorder), strings.Join(disorder[:min(3, len(disorder))], "; "))
	}
	return v1, v2
}

type jobStep struct {
	NodeID string `json:"node_id"`
	TaskID string `json:"task_id"`
	Step   int    `json:"step"`
	PID    int    `json:"pid"`
}

// checkJobSteps counts the job_step effects in ORCH_EVENTS: every step of
// the job tasks up to the steps each task reports done is there, and a step
// that ran twice ran first in a worker that ended abruptly (killed, or
// stopped and then killed by its watchdog). Across graceful restarts every
// step runs exactly once. explain (may be nil) tells what is known of a
// worker a step ran again after, for the report.
func checkJobSteps(events [][]byte, jobs map[string][]schema.Task, ab *abrupt, explain func(pid int) string) Verdict {
	const name = "job steps run exactly once across graceful restarts"
	runs := map[string][]jobStep{}
	for _, data := range events {
		var s jobStep
		if json.Unmarshal(data, &s) != nil {
			continue
		}
		k := fmt.Sprintf("%s/%d", s.TaskID, s.Step)
		runs[k] = append(runs[k], s)
	}
	steps, repeats := 0, 0
	var bad []string
	for node, ts := range jobs {
		for _, t := range ts {
			for n := 1; n <= t.StepsDone; n++ {
				if len(runs[fmt.Sprintf("%s/%d", t.TaskID, n)]) == 0 {
					bad = append(bad, fmt.Sprintf("%s/%s step %d done but has no effect", node, t.TaskID, n))
				}
			}
			// Every step that ran, done or not: a repeat must follow a worker
			// that ended abruptly, and never be made by the same worker.
			for n := 1; n <= max(t.StepsDone+1, 1); n++ {
				rs := runs[fmt.Sprintf("%s/%d", t.TaskID, n)]
				if len(rs) > 0 {
					steps++
				}
				for i, r := range rs[:max(0, len(rs)-1)] {
					switch {
					case rs[i+1].PID == r.PID:
						bad = append(bad, fmt.Sprintf("%s/%s step %d ran twice in worker %d", node, t.TaskID, n, r.PID))
					case ab.has(r.PID):
						repeats++
					default:
						msg := fmt.Sprintf("%s/%s step %d ran again after worker %d, which stopped gracefully", node, t.TaskID, n, r.PID)
						if explain != nil {
							msg += " (" + explain(r.PID) + ")"
						}
						bad = append(bad, msg)
					}
				}
			}
		}
	}
	if len(bad) > 0 {
		return fail(name, "%d problems: %s", len(bad), strings.Join(bad[:min(3, len(bad))], "; "))
	}
	return pass(name, "%d steps of %d jobs; %d re-run after a worker was killed (allowed), none after a graceful restart", steps, countJobs(jobs), repeats)
}

// workerStory tells, from the nodes' restart results, how a worker started
// and ended: what to look at when a step ran again after it.
func workerStory(results []schema.RestartResult) func(pid int) string {
	return func(pid int) string {
		var parts []string
		for _, r := range results {
			var role string
			switch pid {
			case r.NewPID:
				role = "started"
			case r.OldPID:
				role = "ended"
			default:
				continue
			}
			parts = append(parts, fmt.Sprintf("%s by %s restart %s at %s: graceful %v, success %v, notes %q", role, r.Reason,
				r.RestartID, r.StartedAt.UTC().Format("15:04:05.000"), r.Graceful, r.Success, r.Errors))
		}
		if len(parts) == 0 {
			return "no restart result names it"
		}
		return strings.Join(parts, "; ")
	}
}

func countJobs(jobs map[string][]schema.Task) int {
	n := 0
	for _, ts := range jobs {
		n += len(ts)
	}
	return n
}

// checkBudget checks, for each of the harness's rolls, that no more than
// RollBudget of its restarts overlapped in time (from the nodes' own restart
// results in ORCH_EVENTS).
func checkBudget(results []schema.RestartResult, rolls []string) Verdict {
	const name = "disruption budget never exceeded"
	worst, restarts := 0, 0
	for _, id := range rolls {
		// A roll's restarts carry the restart id <roll>-<node>.
		var rs []schema.RestartResult
		for _, r := range results {
			if id != "" && r.Success && strings.HasPrefix(r.RestartID, id+"-") {
				rs = append(rs, r)
			}
		}
		restarts += len(rs)
		if m := maxConcurrent(rs); m > worst {
			worst = m
		}
	}
	if worst > RollBudget {
		return fail(name, "%d restarts of one roll overlapped; the budget is %d", worst, RollBudget)
	}
	return pass(name, "%d rolls, %d roll restarts, at most %d at a time (budget %d)", len(rolls), restarts, worst, RollBudget)
}

func maxConcurrent(rs []schema.RestartResult) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var es []edge
	for _, r := range rs {
		es = append(es, edge{r.StartedAt, 1}, edge{r.CompletedAt, -1})
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].at.Equal(es[j].at) {
			return es[i].delta < es[j].delta
		}
		return es[i].at.Before(es[j].at)
	})
	cur, top := 0, 0
	for _, e := range es {
		cur += e.delta
		top = max(top, cur)
	}
	return top
}

// checkFencing checks that no node acted on a deposed leader: the fencing
// tokens of the restarts each node accepted never go down, and none is
// older than a term the harness had already seen when the restart began.
func checkFencing(results []schema.RestartResult, terms []termSeen) Verdict {
	const name = "no node acted on by a deposed leader"
	lastTok := map[string]uint64{}
	fenced := 0
	var bad []string
	for _, r := range results {
		if r.FencingToken == 0 {
			continue // an operator's restart, not a coordinator's
		}
		fenced++
		if r.FencingToken < lastTok[r.NodeID] {
			bad = append(bad, fmt.Sprintf("%s accepted term %d after term %d", r.NodeID, r.FencingToken, lastTok[r.NodeID]))
		}
		lastTok[r.NodeID] = max(lastTok[r.NodeID], r.FencingToken)
		// The newest term the harness saw a second before the restart began.
		var seen uint64
		for _, t := range terms {
			if t.At.Before(r.StartedAt.Add(-time.Second)) {
				seen = max(seen, t.Term)
			}
		}
		if r.FencingToken < seen {
			bad = append(bad, fmt.Sprintf("%s restarted at %s by term %d; term %d already led", r.NodeID,
				r.StartedAt.Format(time.TimeOnly), r.FencingToken, seen))
		}
	}
	if len(bad) > 0 {
		return fail(name, "%s", strings.Join(bad[:min(3, len(bad))], "; "))
	}
	return pass(name, "%d coordinator restarts over %d terms, fencing tokens never behind", fenced, len(terms))
}

// checkJustified lists every quarantine and breaker opening and checks each
// against the harness's own probes: a quarantined node was seen unhealthy in
// the minute before; the breaker opened when at least a third of the nodes
// were seen unhealthy together in the 10 s before.
func checkJustified(alerts [][]byte, seen []sample, nodes int) (Verdict, []string) {
	const name = "every quarantine and breaker opening justified"
	var listed, bad []string
	for _, data := range alerts {
		var a struct {
			Kind      string    `json:"kind"`
			NodeID    string    `json:"node_id"`
			Message   string    `json:"message"`
			Timestamp time.Time `json:"timestamp"`
			Details   struct {
				Nodes map[string]string `json:"nodes"` // the nodes the breaker counted, and why
			} `json:"details"`
		}
		if json.Unmarshal(data, &a) != nil {
			continue
		}
		switch a.Kind {
		case "escalation_quarantine":
			listed = append(listed, fmt.Sprintf("%s quarantine %s: %s", a.Timestamp.Format(time.TimeOnly), a.NodeID, a.Message))
			if !seenUnhealthy(seen, a.NodeID, a.Timestamp.Add(-time.Minute), a.Timestamp) {
				bad = append(bad, "quarantine of "+a.NodeID+" while the harness saw it healthy")
			}
		case "circuit_breaker_open":
			listed = append(listed, fmt.Sprintf("%s breaker open: %s", a.Timestamp.Format(time.TimeOnly), a.Message))
			from := a.Timestamp.Add(-10 * time.Second)
			if mostUnhealthy(seen, from, a.Timestamp) < (nodes+2)/3 {
				bad = append(bad, "breaker opened at "+a.Timestamp.Format(time.TimeOnly)+" with fewer than a third of the nodes seen unhealthy"+
					probesOf(seen, a.Details.Nodes, from, a.Timestamp))
			}
		}
	}
	if len(bad) > 0 {
		return fail(name, "%s", strings.Join(bad, "; ")), listed
	}
	return pass(name, "%d quarantines or breaker openings, each justified", len(listed)), listed
}

// breakerAtEnd lists a breaker still open at the end of the run (its opening
// may have left no alert: an alert published while JetStream was away is
// lost) and checks it against the probes like an alerted opening.
func breakerAtEnd(b schema.BreakerState, seen []sample, nodes int) (listed, bad string) {
	if !b.Open || b.OpenedAt == nil {
		return "", ""
	}
	at := *b.OpenedAt
	listed = fmt.Sprintf("%s breaker open (still open at the end): %s", at.Format(time.TimeOnly), b.Reason)
	if mostUnhealthy(seen, at.Add(-10*time.Second), at) < (nodes+2)/3 {
		bad = "breaker opened at " + at.Format(time.TimeOnly) + " with fewer than a third of the nodes seen unhealthy"
	}
	return listed, bad
}

// probesOf says, for each node the breaker counted, what the probes saw of
// it in [from, to]: how a failing verdict shows who disagreed.
func probesOf(seen []sample, counted map[string]string, from, to time.Time) string {
	if len(counted) == 0 {
		return ""
	}
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(counted)) {
		n, sick := 0, 0
		for _, s := range seen {
			if s.Node == id && !s.At.Before(from) && !s.At.After(to) {
				n++
				if !s.Healthy {
					sick++
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%s (leader: %s; probes: %d of %d unhealthy)", id, counted[id], sick, n))
	}
	return ": " + strings.Join(parts, ", ")
}

func seenUnhealthy(seen []sample, node string, from, to time.Time) bool {
	for _, s := range seen {
		if s.Node == node && !s.Healthy && !s.At.Before(from) && !s.At.After(to) {
			return true
		}
	}
	return false
}

// mostUnhealthy is the most nodes seen unhealthy within one probe round
// (samples within 250 ms of each other) in [from, to].
func mostUnhealthy(seen []sample, from, to time.Time) int {
	top := 0
	for i, s := range seen {
		if s.Healthy || s.At.Before(from) || s.At.After(to) {
			continue
		}
		set := map[string]bool{}
		for _, o := range seen[i:] {
			if o.At.Sub(s.At) > 250*time.Millisecond || o.At.After(to) {
				break
			}
			if !o.Healthy {
				set[o.Node] = true
			}
		}
		top = max(top, len(set))
	}
	return top
}

// readTasks reads every task of a node through a client of the harness.
func readTasks(ctx context.Context, cl *client.Client) ([]schema.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return cl.AllTasks(ctx)
}

var _ = slices.Sort[[]int]

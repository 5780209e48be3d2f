package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// t0 is the base of every synthetic history: a fixed wall-clock time, with
// no monotonic reading, so comparisons are exact.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// wantVerdict fails t unless v passes (or fails) as wanted and its detail
// holds every fragment in want.
func wantVerdict(t *testing.T, what string, v Verdict, pass bool, want ...string) {
	t.Helper()
	if v.Pass != pass {
		t.Errorf("%s: Pass = %v, want %v (detail %q)", what, v.Pass, pass, v.Detail)
	}
	for _, w := range want {
		if !strings.Contains(v.Detail, w) {
			t.Errorf("%s: detail %q does not contain %q", what, v.Detail, w)
		}
	}
	if v.Name == "" {
		t.Errorf("%s: verdict has no name", what)
	}
}

// --- checkRequests ---

// history is a synthetic checkRequests input: what each client called and
// was told, and what the journal tap saw on each node.
type history struct {
	rec *Record
	tap *tap
}

func newHistory() *history {
	return &history{rec: newRecord(), tap: &tap{order: map[string][]string{}, count: map[string]int{}}}
}

// calls records client cl's calls in order; ids ending in "?" are left
// unanswered (the "?" is dropped), the others are acknowledged.
func (h *history) calls(cl string, ids ...string) *history {
	for _, id := range ids {
		if un, ok := strings.CutSuffix(id, "?"); ok {
			h.rec.call(cl, un)
			continue
		}
		h.rec.call(cl, id)
		h.rec.ack("", id, nil)
	}
	return h
}

// journal appends ids to node's journal, in order, as the tap would.
func (h *history) journal(node string, ids ...string) *history {
	for _, id := range ids {
		h.tap.order[node] = append(h.tap.order[node], id)
		h.tap.count[id]++
	}
	return h
}

func TestCheckRequests(t *testing.T) {
	type want struct {
		once, order bool
		detail      string // in the failing verdict's detail, if any
	}
	cases := []struct {
		name string
		h    *history
		want want
	}{
		{"acked once each in order",
			newHistory().calls("c1", "a1", "a2", "a3").journal("n1", "a1", "a2", "a3"),
			want{true, true, ""}},
		{"acked never journaled",
			newHistory().calls("c1", "a1", "a2", "a3").journal("n1", "a1", "a3"),
			want{false, true, "c1 call 1 acknowledged, never journaled"}},
		{"acked journaled twice",
			newHistory().calls("c1", "a1", "a2", "a3").journal("n1", "a1", "a2", "a2", "a3"),
			want{false, true, "c1 call 1 journaled 2 times"}},
		{"acked journaled twice on two nodes",
			newHistory().calls("c1", "a1").journal("n1", "a1").journal("n2", "a1"),
			want{false, true, "c1 call 0 journaled 2 times"}},
		{"unacked journaled twice",
			newHistory().calls("c1", "a1", "a2?").journal("n1", "a1", "a2", "a2"),
			want{false, true, "c1 call 1 journaled 2 times (unanswered)"}},
		{"unacked never journaled",
			newHistory().calls("c1", "a1", "a2?", "a3").journal("n1", "a1", "a3"),
			want{true, true, ""}},
		{"unacked journaled once",
			newHistory().calls("c1", "a1", "a2?", "a3").journal("n1", "a1", "a2", "a3"),
			want{true, true, ""}},
		{"one client's calls reversed",
			newHistory().calls("c1", "a1", "a2").journal("n1", "a2", "a1"),
			want{true, false, "c1 call 1 journaled before call 0"}},
		{"one client's calls reversed among others",
			newHistory().calls("c1", "a1", "a2", "a3").calls("c2", "b1").journal("n1", "a1", "b1", "a3", "a2"),
			want{true, false, "c1 call 2 journaled before call 1"}},
		{"two clients interleaved, one node",
			newHistory().calls("c1", "a1", "a2").calls("c2", "b1", "b2").journal("n1", "b1", "a1", "b2", "a2"),
			want{true, true, ""}},
		{"two clients, second entirely first",
			newHistory().calls("c1", "a1", "a2").calls("c2", "b1", "b2").journal("n1", "b1", "b2", "a1", "a2"),
			want{true, true, ""}},
		{"two clients nested",
			newHistory().calls("c1", "a1", "a2").calls("c2", "b1", "b2").journal("n1", "a1", "b1", "b2", "a2"),
			want{true, true, ""}},
		{"two clients on two nodes",
			newHistory().calls("c1", "a1", "a2").calls("c2", "b1", "b2").journal("n2", "b1", "b2").journal("n1", "a1", "a2"),
			want{true, true, ""}},
		{"no calls",
			newHistory(),
			want{true, true, ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			once, order := checkRequests(tc.h.rec, tc.h.tap)
			var d1, d2 []string
			if !tc.want.once {
				d1 = append(d1, tc.want.detail)
			}
			if !tc.want.order {
				d2 = append(d2, tc.want.detail)
			}
			wantVerdict(t, "once", once, tc.want.once, d1...)
			wantVerdict(t, "order", order, tc.want.order, d2...)
		})
	}
}

// Every interleaving of two clients' calls, each kept in its own order,
// passes both verdicts.
func TestCheckRequestsAnyInterleaving(t *testing.T) {
	a, b := []string{"a1", "a2", "a3"}, []string{"b1", "b2"}
	var walk func(i, j int, got []string)
	n := 0
	walk = func(i, j int, got []string) {
		if i == len(a) && j == len(b) {
			n++
			h := newHistory().calls("c1", a...).calls("c2", b...).journal("n1", got...)
			once, order := checkRequests(h.rec, h.tap)
			wantVerdict(t, fmt.Sprint("once ", got), once, true)
			wantVerdict(t, fmt.Sprint("order ", got), order, true)
			return
		}
		if i < len(a) {
			walk(i+1, j, append(append([]string{}, got...), a[i]))
		}
		if j < len(b) {
			walk(i, j+1, append(append([]string{}, got...), b[j]))
		}
	}
	walk(0, 0, nil)
	if n != 10 { // C(5,2)
		t.Fatalf("walked %d interleavings, want 10", n)
	}
}

// --- checkJobSteps ---

// stepEvent is a job_step event as a node publishes it.
func stepEvent(t *testing.T, node, task string, step, pid int) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"type": schema.TypeJobStep, "node_id": node, "task_id": task,
		"step": step, "pid": pid, "timestamp": t0})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func abruptPIDs(pids ...int) *abrupt {
	a := &abrupt{}
	for _, p := range pids {
		a.add(p, "killed")
	}
	return a
}

func TestCheckJobSteps(t *testing.T) {
	type ev struct {
		task      string
		step, pid int
	}
	jobs := map[string][]schema.Task{
		"n1": {{TaskID: "j1", StepsDone: 3}},
		"n2": {{TaskID: "j2", StepsDone: 2}, {TaskID: "j3"}}, // j3 has not run a step yet
	}
	all := []ev{{"j1", 1, 100}, {"j1", 2, 100}, {"j1", 3, 100}, {"j2", 1, 200}, {"j2", 2, 200}}
	without := func(skip int) []ev { return append(append([]ev{}, all[:skip]...), all[skip+1:]...) }
	cases := []struct {
		name   string
		events []ev
		abrupt []int
		pass   bool
		detail string
	}{
		{"each step once", all, nil, true, "5 steps of 3 jobs; 0 re-run"},
		{"each step once, worker killed after", all, []int{100}, true, "0 re-run"},
		// A worker killed between a step's effect and its checkpoint leaves
		// an effect past steps_done (the step in flight at the end): counted, not a problem.
		{"an effect past steps_done", append(all, ev{"j1", 4, 100}), nil, true, "6 steps"},
		{"events of unknown tasks ignored", append(all, ev{"jx", 1, 100}, ev{"jx", 1, 101}), nil, true, ""},
		{"a step effect missing", without(1), nil, false, "n1/j1 step 2 done but has no effect"},
		{"first step effect missing", without(3), nil, false, "n2/j2 step 1 done but has no effect"},
		{"re-run after an abrupt end",
			[]ev{{"j1", 1, 100}, {"j1", 2, 100}, {"j1", 2, 101}, {"j1", 3, 101}, {"j2", 1, 200}, {"j2", 2, 200}},
			[]int{100}, true, "1 re-run after a worker was killed"},
		{"re-run twice after two abrupt ends",
			[]ev{{"j1", 1, 100}, {"j1", 2, 100}, {"j1", 2, 101}, {"j1", 2, 102}, {"j1", 3, 102}, {"j2", 1, 200}, {"j2", 2, 200}},
			[]int{100, 101}, true, "2 re-run"},
		{"re-run after a graceful stop",
			[]ev{{"j1", 1, 100}, {"j1", 2, 100}, {"j1", 2, 101}, {"j1", 3, 101}, {"j2", 1, 200}, {"j2", 2, 200}},
			nil, false, "n1/j1 step 2 ran again after worker 100, which stopped gracefully"},
		{"re-run after a graceful stop, only the later worker abrupt",
			[]ev{{"j1", 1, 100}, {"j1", 2, 100}, {"j1", 2, 101}, {"j1", 3, 101}, {"j2", 1, 200}, {"j2", 2, 200}},
			[]int{101}, false, "ran again after worker 100"},
		{"three runs, the middle one graceful",
			[]ev{{"j1", 1, 100}, {"j1", 2, 100}, {"j1", 2, 101}, {"j1", 2, 102}, {"j1", 3, 102}, {"j2", 1, 200}, {"j2", 2, 200}},
			[]int{100}, false, "ran again after worker 101"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var events [][]byte
			for _, e := range tc.events {
				node := "n1"
				if e.task != "j1" {
					node = "n2"
				}
				events = append(events, stepEvent(t, node, e.task, e.step, e.pid))
			}
			events = append(events, []byte("not json")) // skipped
			var want []string
			if tc.detail != "" {
				want = append(want, tc.detail)
			}
			wantVerdict(t, "job steps", checkJobSteps(events, jobs, abruptPIDs(tc.abrupt...), nil), tc.pass, want...)
		})
	}
}

func TestCheckJobStepsNoJobs(t *testing.T) {
	wantVerdict(t, "no jobs", checkJobSteps(nil, nil, &abrupt{}, nil), true, "0 steps of 0 jobs")
}

// --- checkBudget and maxConcurrent ---

// restart is a successful restart of node in roll over [from, to] seconds
// after t0.
// restart is a restart result as a node publishes it: a roll's restart is
// known by its restart id <roll>-<node> (the node does not fill roll_id).
func restart(node, roll string, from, to float64) schema.RestartResult {
	r := schema.RestartResult{Success: true, NodeID: node, RestartID: "manual-" + node,
		StartedAt:   at(time.Duration(from * float64(time.Second))),
		CompletedAt: at(time.Duration(to * float64(time.Second)))}
	if roll != "" {
		r.RestartID = roll + "-" + node
	}
	return r
}

func failed(r schema.RestartResult) schema.RestartResult { r.Success = false; return r }

func TestMaxConcurrent(t *testing.T) {
	cases := []struct {
		name string
		rs   []schema.RestartResult
		want int
	}{
		{"none", nil, 0},
		{"one", []schema.RestartResult{restart("n1", "r", 0, 5)}, 1},
		{"sequential", []schema.RestartResult{restart("n1", "r", 0, 5), restart("n2", "r", 6, 9)}, 1},
		{"back to back", []schema.RestartResult{restart("n1", "r", 0, 5), restart("n2", "r", 5, 9)}, 1},
		{"back to back, listed in reverse", []schema.RestartResult{restart("n2", "r", 5, 9), restart("n1", "r", 0, 5)}, 1},
		{"overlapping", []schema.RestartResult{restart("n1", "r", 0, 5), restart("n2", "r", 4, 9)}, 2},
		{"nested", []schema.RestartResult{restart("n1", "r", 0, 10), restart("n2", "r", 2, 3)}, 2},
		{"three at once", []schema.RestartResult{restart("n1", "r", 0, 10), restart("n2", "r", 1, 3), restart("n3", "r", 2, 4), restart("n4", "r", 3, 5)}, 3},
		{"same start", []schema.RestartResult{restart("n1", "r", 1, 2), restart("n2", "r", 1, 2)}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := maxConcurrent(tc.rs); got != tc.want {
				t.Errorf("maxConcurrent = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCheckBudget(t *testing.T) {
	if RollBudget != 1 {
		t.Fatalf("the cases assume RollBudget 1, it is %d", RollBudget)
	}
	overlap := []schema.RestartResult{restart("n1", "r1", 0, 5), restart("n2", "r1", 3, 8)}
	cases := []struct {
		name    string
		results []schema.RestartResult
		rolls   []string
		pass    bool
		detail  string
	}{
		{"one at a time", []schema.RestartResult{restart("n1", "r1", 0, 5), restart("n2", "r1", 6, 8)}, []string{"r1"}, true, "1 rolls, 2 roll restarts, at most 1 at a time"},
		{"back to back", []schema.RestartResult{restart("n1", "r1", 0, 5), restart("n2", "r1", 5, 8)}, []string{"r1"}, true, "at most 1"},
		{"two of one roll overlapping", overlap, []string{"r1"}, false, "2 restarts of one roll overlapped; the budget is 1"},
		{"overlap in the second roll", append([]schema.RestartResult{restart("n3", "r0", 0, 1)}, overlap...), []string{"r0", "r1"}, false, "2 restarts"},
		{"roll not in the list ignored", overlap, []string{"r2"}, true, "0 roll restarts"},
		{"no rolls", overlap, nil, true, "0 rolls"},
		{"failed restart ignored", []schema.RestartResult{overlap[0], failed(overlap[1])}, []string{"r1"}, true, "1 roll restarts"},
		{"operator restart ignored", []schema.RestartResult{overlap[0], restart("n2", "", 3, 8)}, []string{"r1", ""}, true, "at most 1"},
		{"two rolls overlapping each other", []schema.RestartResult{restart("n1", "r1", 0, 5), restart("n2", "r2", 3, 8)}, []string{"r1", "r2"}, true, "2 rolls, 2 roll restarts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantVerdict(t, "budget", checkBudget(tc.results, tc.rolls), tc.pass, tc.detail)
		})
	}
}

// --- checkFencing ---

func fenced(node string, token uint64, started time.Duration) schema.RestartResult {
	return schema.RestartResult{Success: true, NodeID: node, FencingToken: token, StartedAt: at(started), CompletedAt: at(started + time.Second)}
}

func TestCheckFencing(t *testing.T) {
	terms := []termSeen{{At: at(10 * time.Second), Term: 3, Leader: "c1"}, {At: at(20 * time.Second), Term: 5, Leader: "c2"}}
	cases := []struct {
		name    string
		results []schema.RestartResult
		pass    bool
		detail  string
	}{
		{"tokens non-decreasing", []schema.RestartResult{fenced("n1", 3, 11*time.Second), fenced("n1", 3, 15*time.Second), fenced("n1", 5, 25*time.Second)}, true,
			"3 coordinator restarts over 2 terms"},
		{"lower token after a higher one", []schema.RestartResult{fenced("n1", 5, 2*time.Second), fenced("n1", 3, 5*time.Second)}, false,
			"n1 accepted term 3 after term 5"},
		{"each lower token after the highest", []schema.RestartResult{fenced("n1", 5, 2*time.Second), fenced("n1", 3, 5*time.Second), fenced("n1", 4, 8*time.Second)}, false,
			"n1 accepted term 4 after term 5"},
		{"lower token on another node", []schema.RestartResult{fenced("n1", 5, 2*time.Second), fenced("n2", 3, 5*time.Second)}, true, ""},
		{"lower token after a higher one and a token 0", []schema.RestartResult{fenced("n1", 5, 2*time.Second), fenced("n1", 0, 3*time.Second), fenced("n1", 4, 5*time.Second)}, false,
			"n1 accepted term 4 after term 5"},
		{"started 2 s after a newer term was seen", []schema.RestartResult{fenced("n1", 3, 22*time.Second)}, false,
			"restarted at 12:00:22 by term 3; term 5 already led"},
		{"started within 1 s of the newer term", []schema.RestartResult{fenced("n1", 3, 20*time.Second+900*time.Millisecond)}, true, ""},
		{"started just as the newer term was seen", []schema.RestartResult{fenced("n1", 3, 20*time.Second)}, true, ""},
		{"started before any term was seen", []schema.RestartResult{fenced("n1", 1, 0)}, true, ""},
		{"current term", []schema.RestartResult{fenced("n1", 5, 22*time.Second)}, true, ""},
		{"newer term than any seen", []schema.RestartResult{fenced("n1", 6, 22*time.Second)}, true, ""},
		{"token 0 ignored", []schema.RestartResult{fenced("n1", 5, 21*time.Second), fenced("n1", 0, 30*time.Second)}, true,
			"1 coordinator restarts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			if tc.detail != "" {
				want = append(want, tc.detail)
			}
			wantVerdict(t, "fencing", checkFencing(tc.results, terms), tc.pass, want...)
		})
	}
}

// --- checkJustified and mostUnhealthy ---

func alert(t *testing.T, kind, node, msg string, ts time.Time) []byte {
	t.Helper()
	a := map[string]any{"type": schema.TypeAlert, "kind": kind, "message": msg, "timestamp": ts, "severity": "critical"}
	if node != "" {
		a["node_id"] = node
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// round is one probe round at d after t0: every node in nodes, the ones in
// sick unhealthy, each sample 10 ms after the one before.
func round(d time.Duration, nodes int, sick ...string) []sample {
	var out []sample
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		healthy := true
		for _, s := range sick {
			if s == id {
				healthy = false
			}
		}
		out = append(out, sample{At: at(d + time.Duration(i)*10*time.Millisecond), Node: id, Healthy: healthy})
	}
	return out
}

func rounds(rs ...[]sample) []sample {
	var out []sample
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

func TestCheckJustified(t *testing.T) {
	const nodes = 5
	alertAt := 100 * time.Second
	quarantine := func(t *testing.T) []byte {
		return alert(t, "escalation_quarantine", "n2", "node n2 quarantined: 3 restarts failed", at(alertAt))
	}
	breaker := func(t *testing.T) []byte {
		return alert(t, "circuit_breaker_open", "", "circuit breaker open: too many unhealthy", at(alertAt))
	}
	cases := []struct {
		name   string
		alerts func(t *testing.T) [][]byte
		seen   []sample
		nodes  int
		pass   bool
		detail string
	}{
		{"quarantine after the node was seen unhealthy",
			func(t *testing.T) [][]byte { return [][]byte{quarantine(t)} },
			rounds(round(30*time.Second, nodes), round(70*time.Second, nodes, "n2"), round(99*time.Second, nodes)),
			nodes, true, "1 quarantines or breaker openings, each justified"},
		{"quarantine of a node seen unhealthy at the alert's instant",
			func(t *testing.T) [][]byte { return [][]byte{quarantine(t)} },
			[]sample{{At: at(alertAt), Node: "n2"}},
			nodes, true, ""},
		{"quarantine of a node healthy throughout",
			func(t *testing.T) [][]byte { return [][]byte{quarantine(t)} },
			rounds(round(50*time.Second, nodes, "n1", "n3"), round(90*time.Second, nodes, "n4")),
			nodes, false, "quarantine of n2 while the harness saw it healthy"},
		{"quarantine of a node unhealthy only over a minute before",
			func(t *testing.T) [][]byte { return [][]byte{quarantine(t)} },
			rounds(round(39*time.Second, nodes, "n2"), round(41*time.Second, nodes)),
			nodes, false, "quarantine of n2"},
		{"quarantine of a node unhealthy only after the alert",
			func(t *testing.T) [][]byte { return [][]byte{quarantine(t)} },
			rounds(round(99*time.Second, nodes), round(101*time.Second, nodes, "n2")),
			nodes, false, "quarantine of n2"},
		{"breaker with a third of the nodes unhealthy in one round",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			rounds(round(90*time.Second, nodes, "n1"), round(95*time.Second, nodes, "n1", "n4"), round(99*time.Second, nodes)),
			nodes, true, "1 quarantines"},
		{"breaker with one node unhealthy",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			rounds(round(91*time.Second, nodes, "n1"), round(95*time.Second, nodes, "n1"), round(99*time.Second, nodes, "n3")),
			nodes, false, "breaker opened at 12:01:40 with fewer than a third of the nodes seen unhealthy"},
		{"breaker with two unhealthy, but over 10 s before",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			rounds(round(85*time.Second, nodes, "n1", "n2", "n3"), round(95*time.Second, nodes)),
			nodes, false, "breaker opened"},
		{"breaker with two unhealthy, in different rounds",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			rounds(round(93*time.Second, nodes, "n1"), round(96*time.Second, nodes, "n2")),
			nodes, false, "breaker opened"},
		{"breaker, 7 nodes, two unhealthy (needs three)",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			round(95*time.Second, 7, "n1", "n2"),
			7, false, "breaker opened"},
		{"breaker, 7 nodes, three unhealthy",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			round(95*time.Second, 7, "n1", "n2", "n7"),
			7, true, ""},
		{"breaker, 3 nodes, one unhealthy",
			func(t *testing.T) [][]byte { return [][]byte{breaker(t)} },
			round(95*time.Second, 3, "n3"),
			3, true, ""},
		{"other alerts not checked",
			func(t *testing.T) [][]byte {
				return [][]byte{alert(t, "roll_failed", "n2", "roll failed", at(alertAt)), []byte("{not json")}
			},
			nil, nodes, true, "0 quarantines"},
		{"one justified, one not",
			func(t *testing.T) [][]byte { return [][]byte{quarantine(t), breaker(t)} },
			round(95*time.Second, nodes, "n2"),
			nodes, false, "breaker opened"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			alerts := tc.alerts(t)
			var want []string
			if tc.detail != "" {
				want = append(want, tc.detail)
			}
			v, listed := checkJustified(alerts, tc.seen, tc.nodes)
			wantVerdict(t, "justified", v, tc.pass, want...)
			// Every quarantine and breaker opening is listed, whatever the verdict.
			n := 0
			for _, a := range alerts {
				var al struct{ Kind, Message string }
				if json.Unmarshal(a, &al) != nil || (al.Kind != "escalation_quarantine" && al.Kind != "circuit_breaker_open") {
					continue
				}
				if n >= len(listed) || !strings.Contains(listed[n], al.Message) {
					t.Errorf("listed %q: entry %d does not hold %q", listed, n, al.Message)
				}
				n++
			}
			if len(listed) != n {
				t.Errorf("listed %d entries %q, want %d", len(listed), listed, n)
			}
		})
	}
}

// An unjustified opening says, for each node the breaker counted, what the
// leader said of it and what the probes saw.
func TestCheckJustifiedSaysWhoDisagreed(t *testing.T) {
	a := map[string]any{"type": schema.TypeAlert, "kind": "circuit_breaker_open", "message": "circuit breaker open",
		"timestamp": at(100 * time.Second), "details": map[string]any{"unhealthy": 2, "total": 5,
			"nodes": map[string]string{"n3": "silent for 1.2s", "n1": "answering unhealthy (phase failed)"}}}
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	seen := rounds(round(92*time.Second, 5, "n1"), round(96*time.Second, 5), round(101*time.Second, 5, "n3"))
	v, _ := checkJustified([][]byte{data}, seen, 5)
	wantVerdict(t, "justified", v, false, "breaker opened at 12:01:40 with fewer than a third of the nodes seen unhealthy: "+
		"n1 (leader: answering unhealthy (phase failed); probes: 1 of 2 unhealthy), "+
		"n3 (leader: silent for 1.2s; probes: 0 of 2 unhealthy)")
}

func TestCheckJustifiedListing(t *testing.T) {
	alerts := [][]byte{
		alert(t, "escalation_quarantine", "n2", "node n2 quarantined: restart storm", at(100*time.Second)),
		alert(t, "circuit_breaker_open", "", "circuit breaker open: 2 of 5 unhealthy", at(130*time.Second)),
	}
	seen := rounds(round(90*time.Second, 5, "n2"), round(125*time.Second, 5, "n2", "n5"))
	v, listed := checkJustified(alerts, seen, 5)
	wantVerdict(t, "justified", v, true, "2 quarantines or breaker openings, each justified")
	want := []string{
		"12:01:40 quarantine n2: node n2 quarantined: restart storm",
		"12:02:10 breaker open: circuit breaker open: 2 of 5 unhealthy",
	}
	if strings.Join(listed, "\n") != strings.Join(want, "\n") {
		t.Errorf("listed:\n%s\nwant:\n%s", strings.Join(listed, "\n"), strings.Join(want, "\n"))
	}
}

func TestMostUnhealthy(t *testing.T) {
	from, to := at(10*time.Second), at(20*time.Second)
	cases := []struct {
		name string
		seen []sample
		want int
	}{
		{"none", nil, 0},
		{"all healthy", round(15*time.Second, 5), 0},
		{"one round, three unhealthy", round(15*time.Second, 5, "n1", "n3", "n5"), 3},
		{"best of two rounds", rounds(round(12*time.Second, 5, "n1"), round(15*time.Second, 5, "n2", "n4")), 2},
		{"rounds not added together", rounds(round(12*time.Second, 5, "n1", "n2"), round(15*time.Second, 5, "n3", "n4")), 2},
		{"a node counted once per round", []sample{{At: at(15 * time.Second), Node: "n1"}, {At: at(15*time.Second + 100*time.Millisecond), Node: "n1"}}, 1},
		{"samples 250 ms apart are one round", []sample{{At: at(15 * time.Second), Node: "n1"}, {At: at(15*time.Second + 250*time.Millisecond), Node: "n2"}}, 2},
		{"samples over 250 ms apart are two rounds", []sample{{At: at(15 * time.Second), Node: "n1"}, {At: at(15*time.Second + 251*time.Millisecond), Node: "n2"}}, 1},
		{"a round before from", round(9*time.Second, 5, "n1", "n2", "n3"), 0},
		{"a round after to", round(21*time.Second, 5, "n1", "n2", "n3"), 0},
		{"a round at from", round(10*time.Second, 5, "n1", "n2"), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := mostUnhealthy(tc.seen, from, to); got != tc.want {
				t.Errorf("mostUnhealthy = %d, want %d", got, tc.want)
			}
		})
	}
}

// --- checkTasks ---

func TestCheckTasks(t *testing.T) {
	task := func(id, status string, n int) schema.Task {
		return schema.Task{TaskID: id, Title: "title " + id, Status: schema.TaskStatus(status),
			Checkpoint: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)), CreatedAt: t0, UpdatedAt: at(time.Duration(n) * time.Second)}
	}
	rec := newRecord()
	rec.ack("n1", "r1", ptr(task("t1", "pending", 1)))
	rec.ack("n1", "r2", ptr(task("t2", "running", 2)))
	rec.ack("n2", "r3", ptr(task("t3", "pending", 3)))
	rec.ack("n2", "r4", &schema.Task{TaskID: "job", Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 3}}) // checked as a job, not here
	same := map[string][]schema.Task{
		"n1": {task("t1", "pending", 1), task("t2", "running", 2)},
		"n2": {task("t3", "pending", 3)},
	}
	clone := func(edit func(m map[string][]schema.Task)) map[string][]schema.Task {
		m := map[string][]schema.Task{}
		for k, v := range same {
			m[k] = append([]schema.Task{}, v...)
		}
		edit(m)
		return m
	}
	cases := []struct {
		name   string
		nodes  map[string][]schema.Task
		err    map[string]error
		pass   bool
		detail string
	}{
		{"same content", same, nil, true, "3 acknowledged tasks"},
		{"extra tasks on a node", clone(func(m map[string][]schema.Task) {
			m["n2"] = append(m["n2"], task("t9", "pending", 9))
		}), nil, true, "3 acknowledged tasks"},
		{"a task missing", clone(func(m map[string][]schema.Task) { m["n1"] = m["n1"][:1] }), nil, false,
			"1 of 3 acknowledged tasks lost, 0 differ: n1/t2 lost"},
		{"a node's tasks all missing", clone(func(m map[string][]schema.Task) { delete(m, "n2") }), nil, false,
			"n2/t3 lost"},
		{"a task on the wrong node", clone(func(m map[string][]schema.Task) {
			m["n1"] = append(m["n1"], m["n2"]...)
			delete(m, "n2")
		}), nil, false, "n2/t3 lost"},
		{"a task with a different checkpoint", clone(func(m map[string][]schema.Task) {
			m["n2"] = []schema.Task{task("t3", "pending", 3)}
			m["n2"][0].Checkpoint = json.RawMessage(`{"n":2}`)
		}), nil, false, "0 of 3 acknowledged tasks lost, 1 differ: n2/t3 differs"},
		{"a task with a different status", clone(func(m map[string][]schema.Task) {
			m["n1"] = []schema.Task{task("t1", "pending", 1), task("t2", "completed", 2)}
		}), nil, false, "n1/t2 differs"},
		{"a task with an older update", clone(func(m map[string][]schema.Task) {
			m["n2"] = []schema.Task{task("t3", "pending", 3)}
			m["n2"][0].UpdatedAt = t0
		}), nil, false, "n2/t3 differs"},
		{"read error", same, map[string]error{"n2": errors.New("no responders")}, false,
			"reading n2's tasks: no responders"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := checkTasks(t.Context(), rec, func(node string) ([]schema.Task, error) {
				if err := tc.err[node]; err != nil {
					return nil, err
				}
				return tc.nodes[node], nil
			})
			wantVerdict(t, "tasks", v, tc.pass, tc.detail)
		})
	}
}

func TestCheckTasksNothingAcked(t *testing.T) {
	read := func(string) ([]schema.Task, error) { t.Error("read called with no acknowledged task"); return nil, nil }
	wantVerdict(t, "tasks", checkTasks(t.Context(), newRecord(), read), true, "0 acknowledged tasks")
}

func ptr[T any](v T) *T { return &v }

// A step run again after a worker that stopped gracefully is reported with
// what the restart results say of that worker.
func TestCheckJobStepsExplainsTheWorker(t *testing.T) {
	jobs := map[string][]schema.Task{"n1": {{TaskID: "j1", StepsDone: 2}}}
	var events [][]byte
	for _, e := range []struct{ step, pid int }{{1, 100}, {2, 100}, {2, 101}} {
		events = append(events, stepEvent(t, "n1", "j1", e.step, e.pid))
	}
	results := []schema.RestartResult{
		{RestartID: "r0", Reason: schema.ReasonManualRequest, NewPID: 100, Graceful: true, Success: true, StartedAt: t0},
		{RestartID: "r1", Reason: schema.ReasonRollingRestart, OldPID: 100, NewPID: 101, Graceful: true, Success: true, StartedAt: t0},
	}
	wantVerdict(t, "explained", checkJobSteps(events, jobs, &abrupt{}, workerStory(results)), false,
		"step 2 ran again after worker 100, which stopped gracefully (started by manual_request restart r0",
		"ended by rolling_restart restart r1")
	wantVerdict(t, "unexplained", checkJobSteps(events, jobs, &abrupt{}, workerStory(nil)), false, "(no restart result names it)")
}

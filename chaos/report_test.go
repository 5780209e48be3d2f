package chaos

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// sampleReport has two faults of one kind that recovered (1 s and 3 s), one
// of another kind that never did, and, in a third kind, both.
func sampleReport(verdicts ...Verdict) *Report {
	return &Report{
		Seed:     42,
		Duration: 90*time.Second + 400*time.Millisecond,
		Faults: []FaultRecord{
			{Kind: "kill-node", Target: "node-1", At: 5 * time.Second, Held: time.Second, Recovery: time.Second},
			{Kind: "partition-nats", Target: "nats-2", At: 10 * time.Second, Held: 6 * time.Second, Recovery: -1, Note: "isolated", Err: "nats-2 not recovered within 1m0s"},
			{Kind: "kill-node", Target: "node-3", At: 20 * time.Second, Held: time.Second, Recovery: 3 * time.Second},
			{Kind: "stop-worker", Target: "node-2", At: 30 * time.Second, Held: 2 * time.Second, Recovery: 2 * time.Second},
			{Kind: "stop-worker", Target: "node-4", At: 40 * time.Second, Held: 2 * time.Second, Recovery: -1},
		},
		Verdicts:       verdicts,
		Escalations:    []string{"12:00:01 quarantine node-2: node node-2 quarantined"},
		Calls:          10,
		Acked:          8,
		Errors:         map[string]int{"timeout": 2},
		Rolls:          3,
		RollOutcomes:   []string{"r1: completed, 5/5 done, failed []; paused 2x, resumed 2x by itself", "r2: aborted, 2/5 done, failed [node-3]; paused 1x, aborted by the harness", "r3: completed, 5/5 done, failed []"},
		RollsCompleted: 2, RollsPaused: 2, RollsResumed: 2, RollsAborted: 1,
		RollRefusals:   map[string]int{"NOT_LEADER": 2},
		RollUnanswered: 2, RollNeverMade: 1,
	}
}

func writeReport(r *Report) string {
	var b bytes.Buffer
	r.Write(&b)
	return b.String()
}

// section returns the rows under the header line starting with header, up
// to the next blank line, each trimmed.
func section(t *testing.T, out, header string) []string {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(strings.TrimSpace(l), header) {
			continue
		}
		var rows []string
		for _, r := range lines[i+1:] {
			if strings.TrimSpace(r) == "" {
				break
			}
			rows = append(rows, strings.TrimSpace(r))
		}
		return rows
	}
	t.Fatalf("no %q table in:\n%s", header, out)
	return nil
}

func TestReportKindTable(t *testing.T) {
	out := writeReport(sampleReport(pass("all good", "fine")))
	type row struct{ count, median, worst string }
	got := map[string]row{}
	var order []string
	for _, r := range section(t, out, "FAULT KIND") {
		f := strings.Fields(r)
		if len(f) < 4 {
			t.Fatalf("short kind row %q in:\n%s", r, out)
		}
		got[f[0]] = row{f[1], f[2], strings.Join(f[3:], " ")}
		order = append(order, f[0])
	}
	want := map[string]row{
		// byKind's median is ds[n/2]: the upper of the two middle values.
		"kill-node": {"2", "3.00s", "3.00s"},
		// Never recovered: no median, and the worst says so.
		"partition-nats": {"1", "-", "never (1)"},
		// The median is over the recovered faults; the worst is never.
		"stop-worker": {"2", "2.00s", "never (1)"},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("kind %s: got count/median/worst %+v, want %+v\n%s", k, got[k], w, out)
		}
	}
	if len(got) != len(want) {
		t.Errorf("kinds %v, want %d kinds", order, len(want))
	}
	if strings.Join(order, " ") != "kill-node partition-nats stop-worker" {
		t.Errorf("kinds in order %v, want sorted", order)
	}
}

func TestReportByKindMedian(t *testing.T) {
	rec := func(kind string, secs ...float64) []FaultRecord {
		var out []FaultRecord
		for _, s := range secs {
			d := time.Duration(s * float64(time.Second))
			if s < 0 {
				d = -1
			}
			out = append(out, FaultRecord{Kind: kind, Recovery: d})
		}
		return out
	}
	cases := []struct {
		name          string
		faults        []FaultRecord
		n             int
		median, worst string
	}{
		{"one", rec("k", 1.5), 1, "1.50s", "1.50s"},
		{"odd count, unsorted", rec("k", 5, 1, 2), 3, "2.00s", "5.00s"},
		{"never only", rec("k", -1, -1), 2, "-", "never (2)"},
		{"never among recovered", rec("k", 4, -1, 1, 2), 4, "2.00s", "never (1)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ks := (&Report{Faults: tc.faults}).byKind()
			if len(ks) != 1 {
				t.Fatalf("byKind = %+v, want one kind", ks)
			}
			k := ks[0]
			if k.kind != "k" || k.n != tc.n || k.median != tc.median || k.worst != tc.worst {
				t.Errorf("byKind = %+v, want n %d median %s worst %s", k, tc.n, tc.median, tc.worst)
			}
		})
	}
}

func TestReportFaultRows(t *testing.T) {
	out := writeReport(sampleReport())
	rows := section(t, out, "#")
	if len(rows) != 5 {
		t.Fatalf("%d fault rows, want 5:\n%s", len(rows), out)
	}
	for i, want := range [][]string{
		{"1", "5.0s", "kill-node", "node-1", "1.0s", "1.00s"},
		{"2", "10.0s", "partition-nats", "nats-2", "6.0s", "never", "isolated nats-2 not recovered within 1m0s"},
	} {
		f := strings.Fields(rows[i])
		if len(f) < len(want)-1 || strings.Join(f[:len(want)-1], " ") != strings.Join(want[:len(want)-1], " ") {
			t.Errorf("fault row %d = %q, want it to start %q", i+1, rows[i], want)
		}
		if !strings.HasSuffix(rows[i], want[len(want)-1]) {
			t.Errorf("fault row %d = %q, want it to end %q", i+1, rows[i], want[len(want)-1])
		}
	}
	for _, w := range []string{
		"chaos run: seed 42, 1m30s, 5 faults, 3 rolls started\n",
		"client calls: 10 made, 8 acknowledged; client-visible errors: timeout 2",
		"\nroll r1: completed, 5/5 done, failed []; paused 2x, resumed 2x by itself\n",
		"\nroll r2: aborted, 2/5 done, failed [node-3]; paused 1x, aborted by the harness\n",
		"\nrolls: 2 completed, 2 paused, 2 resumed by the coordinator, 1 aborted by the harness (paused over 1m0s)\n",
		"\nroll starts refused: NOT_LEADER 2\n",
		"\nroll starts unanswered: 2 (1 found made later, 1 never made)\n",
		"quarantines and breaker openings: 1",
		"  12:00:01 quarantine node-2: node node-2 quarantined",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q:\n%s", w, out)
		}
	}
}

func TestReportVerdicts(t *testing.T) {
	ok1 := pass("no acknowledged task mutation lost", "3 acknowledged tasks")
	ok2 := pass("per-client order kept", "2 clients")
	bad := fail("disruption budget never exceeded", "2 restarts of one roll overlapped; the budget is 1")
	const repro = "FAILED: reproduce with SEED=42 DURATION=1m30s make chaos"
	cases := []struct {
		name     string
		verdicts []Verdict
		failed   bool
	}{
		{"all pass", []Verdict{ok1, ok2}, false},
		{"one fails", []Verdict{ok1, bad, ok2}, true},
		{"only a failure", []Verdict{bad}, true},
		{"no verdicts", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleReport(tc.verdicts...)
			if got := r.Failed(); got != tc.failed {
				t.Errorf("Failed() = %v, want %v", got, tc.failed)
			}
			out := writeReport(r)
			rows := section(t, out, "INVARIANT")
			if len(rows) != len(tc.verdicts) {
				t.Fatalf("%d verdict rows, want %d:\n%s", len(rows), len(tc.verdicts), out)
			}
			for i, v := range tc.verdicts {
				rest, ok := strings.CutPrefix(rows[i], v.Name)
				if !ok {
					t.Errorf("verdict row %d = %q, want it to start with %q", i, rows[i], v.Name)
					continue
				}
				want := "PASS"
				if !v.Pass {
					want = "FAIL"
				}
				f := strings.Fields(rest)
				if len(f) == 0 || f[0] != want {
					t.Errorf("verdict %q: row %q, want %s", v.Name, rows[i], want)
				}
				if !strings.HasSuffix(rows[i], v.Detail) {
					t.Errorf("verdict %q: row %q lacks its detail %q", v.Name, rows[i], v.Detail)
				}
			}
			if got := strings.Contains(out, repro); got != tc.failed {
				t.Errorf("reproduce line present = %v, want %v:\n%s", got, tc.failed, out)
			}
			if !tc.failed && strings.Contains(out, "SEED=") {
				t.Errorf("a passing report names a SEED to reproduce:\n%s", out)
			}
		})
	}
}

func TestReportNoErrors(t *testing.T) {
	out := writeReport(&Report{Seed: 1})
	for _, w := range []string{"0 faults", "client-visible errors: none", "quarantines and breaker openings: 0",
		"rolls: 0 completed, 0 paused, 0 resumed by the coordinator, 0 aborted by the harness"} {
		if !strings.Contains(out, w) {
			t.Errorf("empty report lacks %q:\n%s", w, out)
		}
	}
	for _, no := range []string{"roll starts refused", "roll starts unanswered", "\nroll "} {
		if strings.Contains(out, no) {
			t.Errorf("empty report has %q:\n%s", no, out)
		}
	}
}

package chaos

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Write prints the report: each fault, recovery by kind, client calls and
// errors, escalations, and each invariant with PASS or FAIL.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "chaos run: seed %d, %s, %d faults, %d rolls started\n\n", r.Seed, r.Duration.Round(time.Second), len(r.Faults), r.Rolls)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tAT\tFAULT\tTARGET\tHELD\tRECOVERY\tNOTE")
	for i, f := range r.Faults {
		note := strings.TrimSpace(f.Note + " " + f.Err)
		fmt.Fprintf(tw, "  %d\t%.1fs\t%s\t%s\t%.1fs\t%s\t%s\n", i+1, f.At.Seconds(), f.Kind, f.Target, f.Held.Seconds(), fmtRecovery(f.Recovery), note)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FAULT KIND\tCOUNT\tRECOVERY MEDIAN\tWORST")
	for _, k := range r.byKind() {
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", k.kind, k.n, k.median, k.worst)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nclient calls: %d made, %d acknowledged; client-visible errors: %s\n", r.Calls, r.Acked, fmtCounts(r.Errors))
	for _, s := range r.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", s)
	}
	for _, o := range r.RollOutcomes {
		fmt.Fprintf(w, "roll %s\n", o)
	}
	fmt.Fprintf(w, "rolls: %d completed, %d paused, %d resumed by the coordinator, %d aborted by the harness (paused over %s)\n",
		r.RollsCompleted, r.RollsPaused, r.RollsResumed, r.RollsAborted, rollPauseLimit)
	if len(r.RollRefusals) > 0 {
		fmt.Fprintf(w, "roll starts refused: %s\n", fmtCounts(r.RollRefusals))
	}
	if r.RollUnanswered > 0 {
		fmt.Fprintf(w, "roll starts unanswered: %d (%d found made later, %d never made)\n",
			r.RollUnanswered, r.RollUnanswered-r.RollNeverMade, r.RollNeverMade)
	}
	fmt.Fprintf(w, "processes that exited on their own (restarted after 1 s, as systemd would): %d\n", len(r.Exits))
	for _, e := range r.Exits {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "quarantines and breaker openings: %d\n", len(r.Escalations))
	for _, e := range r.Escalations {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  INVARIANT\tRESULT\tDETAIL")
	for _, v := range r.Verdicts {
		res := "PASS"
		if !v.Pass {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.Name, res, v.Detail)
	}
	tw.Flush()
	if r.Failed() {
		fmt.Fprintf(w, "\nFAILED: reproduce with SEED=%d DURATION=%s make chaos\n", r.Seed, r.Duration.Round(time.Second))
	}
}

type kindStats struct {
	kind          string
	n             int
	median, worst string
}

func (r *Report) byKind() []kindStats {
	per := map[string][]time.Duration{}
	never := map[string]int{}
	for _, f := range r.Faults {
		if f.Recovery < 0 {
			never[f.Kind]++
			if _, ok := per[f.Kind]; !ok {
				per[f.Kind] = nil
			}
			continue
		}
		per[f.Kind] = append(per[f.Kind], f.Recovery)
	}
	var out []kindStats
	for k, ds := range per {
		slices.Sort(ds)
		s := kindStats{kind: k, n: len(ds) + never[k], median: "-", worst: "-"}
		if len(ds) > 0 {
			s.median = fmt.Sprintf("%.2fs", ds[len(ds)/2].Seconds())
			s.worst = fmt.Sprintf("%.2fs", ds[len(ds)-1].Seconds())
		}
		if never[k] > 0 {
			s.worst = fmt.Sprintf("never (%d)", never[k])
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kind < out[j].kind })
	return out
}

func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

// --- nodes -------------------------------------------------------------------------

// renderNodes prints the cluster's nodes in roll order (group, priority, id).
func renderNodes(w io.Writer, l *schema.NodeList, group string) {
	nodes := slices.Clone(l.Nodes)
	slices.SortFunc(nodes, func(a, b schema.ClusterNode) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.NodeID, b.NodeID))
	})
	healthy := 0
	for _, n := range nodes {
		if n.Healthy {
			healthy++
		}
	}
	where := ""
	if group != "" {
		where = " in group " + group
	}
	fmt.Fprintf(w, "%d node(s)%s, %d healthy\n", len(nodes), where, healthy)
	if len(nodes) == 0 {
		return
	}
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		hb := "never"
		if n.LastHeartbeat != nil {
			hb = fmtAge(now().Sub(*n.LastHeartbeat))
		}
		rows = append(rows, []string{n.NodeID, orDash(n.Group), strconv.Itoa(n.Priority), orDash(string(n.Phase)),
			yesNo(n.Healthy), hb, strconv.Itoa(n.EscalationLevel), nodeFlags(&n)})
	}
	table(w, "  ", []string{"NODE", "GROUP", "PRIORITY", "PHASE", "HEALTHY", "HEARTBEAT", "LEVEL", "STATE"}, rows)
}

// nodeFlags sums up what is wrong with a node (quarantined, degraded,
// failed, not answering), or "ok".
func nodeFlags(n *schema.ClusterNode) string {
	var s []string
	if n.Quarantined {
		s = append(s, "quarantined")
	}
	if n.Degraded {
		s = append(s, "degraded")
	}
	if n.Failed {
		s = append(s, "failed")
	} else if !n.Answering {
		s = append(s, "not answering")
	}
	if n.Failures > 0 {
		s = append(s, fmt.Sprintf("%d failed attempt(s)", n.Failures))
	}
	if len(s) == 0 {
		return "ok"
	}
	return strings.Join(s, ", ")
}

// fmtAge prints how long ago: "0.8s ago".
func fmtAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return fmtDur(d) + " ago"
}

// renderNodeAction prints the answer of quarantine, release, forget.
func renderNodeAction(w io.Writer, op string, n *schema.ClusterNode) {
	switch op {
	case "forget":
		fmt.Fprintf(w, "%s forgotten: decommissioned, it no longer counts against a roll's budget\n", n.NodeID)
		return
	case "quarantine":
		fmt.Fprintf(w, "%s quarantined: it is not restarted automatically (lift it with `restartcoord release %s`)\n", n.NodeID, n.NodeID)
	case "release":
		fmt.Fprintf(w, "%s released: quarantine lifted, escalation reset\n", n.NodeID)
	}
	f := &facts{}
	f.add("phase", "%s", orDash(string(n.Phase)))
	f.add("healthy", "%s", yesNo(n.Healthy))
	f.add("escalation level", "%d", n.EscalationLevel)
	f.add("state", "%s", nodeFlags(n))
	f.write(w, "  ")
}

// --- cluster-health ----------------------------------------------------------------

func renderClusterHealth(w io.Writer, h *schema.ClusterHealth) {
	fmt.Fprintf(w, "cluster: healthy: %s\n", yesNo(h.Healthy))
	f := &facts{}
	leader := orDash(h.Leader)
	if h.Term > 0 {
		leader += fmt.Sprintf(" (term %d)", h.Term)
	}
	f.add("leader", "%s", leader)
	f.add("nodes healthy", "%d/%d", h.NodesHealthy, h.NodesTotal)
	f.add("by phase", "%s", fmtCounts(h.NodesByPhase))
	f.add("active rolls", "%d", h.ActiveRolls)
	if h.CircuitBreaker.Open {
		since := ""
		if h.CircuitBreaker.OpenedAt != nil {
			since = ", since " + fmtTime(*h.CircuitBreaker.OpenedAt)
		}
		f.add("circuit breaker", "OPEN: %s%s (`restartcoord breaker reset` closes it)", orDash(h.CircuitBreaker.Reason), since)
	} else {
		f.add("circuit breaker", "closed")
	}
	f.add("active connections", "%d", h.ActiveConnections)
	f.add("restarts in 24h", "%d", h.RestartCount24h)
	f.add("last restart", "%s", fmtTimePtr(h.LastRestart))
	f.add("coordinator uptime", "%s", fmtSecs(h.UptimeSeconds))
	f.write(w, "  ")
}

// fmtCounts prints {k: n} sorted by key: "idle 3, stopping 1".
func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func renderBreaker(w io.Writer, b *schema.BreakerState) {
	if b.Open {
		fmt.Fprintf(w, "circuit breaker still OPEN: %s\n", orDash(b.Reason))
		return
	}
	fmt.Fprintln(w, "circuit breaker closed: rolls and escalation restarts go on")
}

// --- history -----------------------------------------------------------------------

func renderHistory(w io.Writer, rs []coordinator.HistoryEntry, since string) {
	ok := 0
	for _, r := range rs {
		if r.Success {
			ok++
		}
	}
	fmt.Fprintf(w, "%d restart(s) in the last %s: %d succeeded, %d failed\n", len(rs), since, ok, len(rs)-ok)
	if len(rs) == 0 {
		return
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		kind := "graceful"
		if !r.Graceful {
			kind = "emergency"
		}
		result := "ok"
		if !r.Success {
			result = "FAILED"
		}
		rows = append(rows, []string{r.StartedAt.UTC().Format(time.RFC3339), r.NodeID, string(r.Reason), kind, result,
			fmtSecs(r.Duration), orDash(r.RollID), r.RestartID})
	}
	table(w, "  ", []string{"STARTED", "NODE", "REASON", "KIND", "RESULT", "DURATION", "ROLL", "RESTART_ID"}, rows)
}

// --- report ------------------------------------------------------------------------

// sloOrder is the order of the SLOs, with their names and how their target
// reads.
var sloOrder = []struct{ key, name, target string }{
	{"success_rate", "success rate", ">= %g%%"},
	{"duration", "restart duration", "<= %gs average of graceful restarts"},
	{"reconnection", "reconnection", ">= %g%% within 60s"},
	{"state_preservation", "state preservation", ">= %g%% of graceful restarts"},
	{"downtime", "downtime", "<= %gs in the period for every node (5 min a month, prorated)"},
}

// sloTargetKey maps an SLO to its key in targets.
func sloTargetKey(slo string) string {
	if slo == "downtime" {
		return "downtime_seconds"
	}
	return slo
}

func renderReport(w io.Writer, r *coordinator.Report) {
	fmt.Fprintf(w, "restart performance, %s to %s (%s)\n", r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339), fmtPeriod(r))
	f := &facts{}
	f.add("total restarts", "%d", r.TotalRestarts)
	f.add("success rate", "%.2f%%", r.SuccessRate)
	f.add("average duration", "%s (graceful restarts: %s over %d)", fmtSecs(r.AverageDuration), fmtSecs(r.GracefulAverageDuration), r.GracefulRestarts)
	f.add("p95 duration", "%s", fmtSecs(r.P95Duration))
	f.add("reconnection rate", "%.2f%% (%d of %d clients back within 60s, over %d restarts)", r.ReconnectionRate,
		r.Reconnection.Reconnected, r.Reconnection.Clients, r.Reconnection.Restarts)
	f.add("state preservation", "%.2f%%", r.StatePreservationRate)
	f.add("downtime", "%s in all; per node at most %s", fmtSecs(r.DowntimeSeconds), fmtSecs(r.DowntimeBudgetSeconds))
	f.add("by reason", "%s", fmtCounts(r.ByReason))
	f.add("errors by type", "%s", fmtCounts(r.ErrorsByType))
	f.write(w, "  ")
	renderByType(w, r)
	renderDowntimeByNode(w, r)

	met := 0
	var rows [][]string
	actual := map[string]string{
		"success_rate": fmt.Sprintf("%.2f%%", r.SuccessRate), "duration": fmtSecs(r.GracefulAverageDuration),
		"reconnection": fmt.Sprintf("%.2f%%", r.ReconnectionRate), "state_preservation": fmt.Sprintf("%.2f%%", r.StatePreservationRate),
		"downtime": worstDowntime(r),
	}
	seen := map[string]bool{}
	row := func(key, name, target string) {
		seen[key] = true
		ok, have := r.SLOCompliance[key]
		verdict := "FAIL"
		switch {
		case !have:
			verdict = "-"
		case ok:
			verdict, met = "PASS", met+1
		}
		if t, ok := r.Targets[sloTargetKey(key)]; ok && strings.Contains(target, "%g") {
			target = fmt.Sprintf(target, t)
		} else if strings.Contains(target, "%g") {
			target = "-"
		}
		rows = append(rows, []string{name, target, orDash(actual[key]), verdict})
	}
	for _, s := range sloOrder {
		row(s.key, s.name, s.target)
	}
	for _, k := range slices.Sorted(maps.Keys(r.SLOCompliance)) {
		if !seen[k] {
			row(k, k, "-")
		}
	}
	fmt.Fprintf(w, "SLO compliance: %d/%d met\n", met, len(r.SLOCompliance))
	table(w, "  ", []string{"SLO", "TARGET", "ACTUAL", "RESULT"}, rows)
}

// restartTypeOrder is the order of the report's restart types.
var restartTypeOrder = []string{coordinator.TypeGraceful, coordinator.TypeEmergency, coordinator.TypeCrashRecovery, coordinator.TypeRolling}

// renderByType prints success and error rates per restart type.
func renderByType(w io.Writer, r *coordinator.Report) {
	if len(r.ByType) == 0 {
		return // a coordinator older than by_type
	}
	var rows [][]string
	for _, k := range restartTypeOrder {
		ts := r.ByType[k]
		if ts == nil {
			continue
		}
		success, errRate := "-", "-" // no restart of the type: no rate
		if ts.Total > 0 {
			success, errRate = fmt.Sprintf("%.2f%%", ts.SuccessRate), fmt.Sprintf("%.2f%%", ts.ErrorRate)
		}
		rows = append(rows, []string{strings.ReplaceAll(k, "_", " "), strconv.Itoa(ts.Total), strconv.Itoa(ts.Succeeded),
			strconv.Itoa(ts.Failed), success, errRate, fmtCounts(ts.ErrorsByType)})
	}
	fmt.Fprintln(w, "by restart type:")
	table(w, "  ", []string{"TYPE", "TOTAL", "OK", "FAILED", "SUCCESS", "ERROR", "ERRORS"}, rows)
}

// renderDowntimeByNode prints the nodes that had downtime in the period.
func renderDowntimeByNode(w io.Writer, r *coordinator.Report) {
	if len(r.DowntimeByNode) == 0 {
		return
	}
	var rows [][]string
	for _, n := range slices.Sorted(maps.Keys(r.DowntimeByNode)) {
		d := r.DowntimeByNode[n]
		verdict := "within"
		if !d.WithinBudget {
			verdict = "OVER"
		}
		rows = append(rows, []string{n, fmtSecs(d.Seconds), fmtSecs(d.RestartSeconds), fmtSecs(d.FailedSeconds), verdict})
	}
	fmt.Fprintf(w, "downtime by node (budget %s each):\n", fmtSecs(r.DowntimeBudgetSeconds))
	table(w, "  ", []string{"NODE", "DOWNTIME", "RESTARTS", "DECLARED_FAILED", "BUDGET"}, rows)
}

// worstDowntime is the downtime SLO's actual: the node with the most.
func worstDowntime(r *coordinator.Report) string {
	worst, secs := "", -1.0
	for _, n := range slices.Sorted(maps.Keys(r.DowntimeByNode)) {
		if d := r.DowntimeByNode[n]; d.Seconds > secs {
			worst, secs = n, d.Seconds
		}
	}
	if worst == "" {
		return fmtSecs(r.DowntimeSeconds)
	}
	return fmt.Sprintf("%s (%s)", fmtSecs(secs), worst)
}

// fmtPeriod prints the report's window readably (7d, 24h, 90m).
func fmtPeriod(r *coordinator.Report) string {
	d := r.To.Sub(r.From)
	if d <= 0 {
		return orDash(r.Period)
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	d = d.Round(time.Second)
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// --- rolls -------------------------------------------------------------------------

// renderPlan prints a dry run's plan and what blocks it.
func renderPlan(w io.Writer, req *schema.RollRequest, p *schema.RollPlan) {
	total := 0
	for _, wv := range p.Plan.Waves {
		total += len(wv)
	}
	verdict := "would start"
	if len(p.BlockedBy) > 0 {
		verdict = "BLOCKED"
	}
	fmt.Fprintf(w, "roll plan (%s): %d node(s) in %d wave(s); %s\n", fmtSelector(req.Selector), total, len(p.Plan.Waves), verdict)
	f := &facts{}
	f.add("policy", "%s", fmtPolicy(req))
	for i, wv := range p.Plan.Waves {
		name := fmt.Sprintf("wave %d", i+1)
		if i == 0 && req.Canary > 0 {
			name += " (canary)"
		}
		f.add(name, "%s", strings.Join(wv, ", "))
	}
	if len(p.Skipped) > 0 {
		f.add("skipped", "%s (quarantined)", strings.Join(p.Skipped, ", "))
	}
	f.list("blocked by", p.BlockedBy, "nothing")
	f.write(w, "  ")
}

func fmtSelector(s schema.Selector) string {
	var parts []string
	if s.Group != "" {
		parts = append(parts, "group "+s.Group)
	}
	if len(s.Nodes) > 0 {
		parts = append(parts, "nodes "+strings.Join(s.Nodes, ","))
	}
	return strings.Join(parts, ", ")
}

func fmtPolicy(r *schema.RollRequest) string {
	s := fmt.Sprintf("max_unavailable %d, canary %d, min_healthy_time %s, healthy_deadline %s, %s, reason %s, timeout %s",
		r.MaxUnavailable, r.Canary, fmtSecs(r.MinHealthyTime), fmtSecs(r.HealthyDeadline),
		map[bool]string{true: "graceful", false: "emergency"}[r.Graceful], r.Reason, fmtSecs(r.Timeout))
	if !r.PreserveState {
		s += ", no snapshot"
	}
	if r.ConfigVersion != "" {
		s += ", config_version " + r.ConfigVersion
	}
	return s
}

// renderRollStarted prints a started roll's id and plan.
func renderRollStarted(w io.Writer, st *schema.RollStatus) {
	fmt.Fprintf(w, "roll %s started: %d node(s) in %d wave(s) (%s)\n", st.RollID, st.Total, len(st.Plan.Waves), fmtSelector(st.Request.Selector))
	fmt.Fprintf(w, "  follow it: restartcoord roll status %s --follow; pause, resume, abort: restartcoord roll pause %s\n", st.RollID, st.RollID)
}

// renderRollStatus prints a roll's status and its nodes.
func renderRollStatus(w io.Writer, st *schema.RollStatus) {
	fmt.Fprintf(w, "roll %s: %s, %d/%d done\n", st.RollID, st.State, st.Done, st.Total)
	f := &facts{}
	f.add("selector", "%s", orDash(fmtSelector(st.Request.Selector)))
	f.add("policy", "%s", fmtPolicy(&st.Request))
	f.add("started", "%s", fmtTime(st.StartedAt))
	if st.ETA != nil {
		f.add("eta", "%s", fmtTime(*st.ETA))
	}
	f.add("current", "%s", fmtIDs(st.Current, 10))
	f.add("failed", "%s", fmtIDs(st.Failed, 10))
	if st.State == schema.RollPaused && st.PausedReason != "" {
		f.add("paused", "%s", fmtPause(st))
	}
	if st.AutoResumes > 0 || st.Request.AutoResume {
		f.add("auto resumes", "%d of %d", st.AutoResumes, st.Request.MaxAutoResumes)
	}
	if st.Message != "" {
		f.add("message", "%s", st.Message)
	}
	if st.Term > 0 {
		f.add("leader term", "%d", st.Term)
	}
	f.write(w, "  ")
	writeRollNodes(w, st, now())
	switch st.State {
	case schema.RollPaused:
		fmt.Fprintf(w, "resume: restartcoord roll resume %s (failed nodes are tried again); abort: restartcoord roll abort %s\n", st.RollID, st.RollID)
	case schema.RollRunning:
		fmt.Fprintf(w, "follow: restartcoord roll status %s --follow\n", st.RollID)
	}
}

// fmtPause says why and since when a roll is paused, and what resumes it.
func fmtPause(st *schema.RollStatus) string {
	s := st.PausedReason
	if st.PausedSince != nil {
		s += " since " + fmtTime(*st.PausedSince)
	}
	switch {
	case mayResumeItself(st):
		s += "; resumes by itself once its failed node is healthy for " + fmtSecs(st.Request.MinHealthyTime)
	default:
		s += "; waits for an operator's resume"
	}
	return s
}

// rollOrder lists the roll's nodes in plan order.
func rollOrder(st *schema.RollStatus) []string {
	var ids []string
	for _, wv := range st.Plan.Waves {
		ids = append(ids, wv...)
	}
	for _, n := range st.Nodes { // not in the plan (should not happen): still shown
		if !slices.Contains(ids, n.NodeID) {
			ids = append(ids, n.NodeID)
		}
	}
	return ids
}

// writeRollNodes prints a table of the roll's nodes: duration and result.
func writeRollNodes(w io.Writer, st *schema.RollStatus, at time.Time) {
	byID := map[string]schema.RollNode{}
	for _, n := range st.Nodes {
		byID[n.NodeID] = n
	}
	ids := rollOrder(st)
	if len(ids) == 0 {
		return
	}
	rows := make([][]string, 0, len(ids))
	for _, id := range ids {
		n, have := byID[id]
		dur, result := "-", "not restarted"
		switch {
		case !have:
			if st.State == schema.RollRunning || st.State == schema.RollPaused {
				result = "pending"
			}
		case slices.Contains(st.Failed, id) || n.Phase == schema.PhaseFailed:
			result = "FAILED: " + orDash(n.Error)
			if n.Duration > 0 {
				dur = fmtSecs(n.Duration)
			}
		case slices.Contains(st.Current, id):
			result = "in progress"
			if n.HealthyAt != nil {
				result = "healthy, waiting min_healthy_time"
			}
			if n.StartedAt != nil {
				dur = fmtSecs(at.Sub(*n.StartedAt).Seconds())
			}
		default:
			result = "restarted"
			dur = fmtSecs(n.Duration)
		}
		rows = append(rows, []string{id, dur, result})
	}
	table(w, "  ", []string{"NODE", "DURATION", "RESULT"}, rows)
}

// renderRollSummary is what a followed roll ends with.
func renderRollSummary(w io.Writer, st *schema.RollStatus, at time.Time) {
	took := ""
	if !st.StartedAt.IsZero() {
		took = " in " + fmtDur(at.Sub(st.StartedAt))
	}
	fmt.Fprintf(w, "roll %s %s: %d/%d node(s) restarted%s\n", st.RollID, st.State, st.Done, st.Total, took)
	if st.Message != "" {
		fmt.Fprintf(w, "  %s\n", st.Message)
	}
	writeRollNodes(w, st, at)
}

// rollBar is the terminal progress line: a bar, done/total, the nodes out
// with their phase, elapsed and ETA.
func rollBar(st *schema.RollStatus, current []string, elapsed time.Duration, at time.Time, problem string) string {
	const width = 20
	filled := 0
	if st.Total > 0 {
		filled = st.Done * width / st.Total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	eta := "-"
	if st.ETA != nil {
		eta = fmtDur(max(st.ETA.Sub(at), 0))
	}
	s := fmt.Sprintf("[%s] %d/%d", bar, st.Done, st.Total)
	if st.State != schema.RollRunning {
		s += " " + strings.ToUpper(st.State)
	}
	if st.State == schema.RollPaused && st.PausedReason != "" {
		s += " (" + st.PausedReason + ")"
	}
	if len(current) > 0 {
		s += "  " + strings.Join(current, ", ")
	}
	if len(st.Failed) > 0 {
		s += "  failed: " + strings.Join(st.Failed, ",")
	}
	s += fmt.Sprintf("  elapsed %s  ETA %s", fmtDur(max(elapsed, 0)), eta)
	if st.Message != "" {
		s += "  (" + st.Message + ")"
	}
	if problem != "" {
		s += "  [" + problem + "]"
	}
	return s
}

// rollLine is the progress line without a terminal; it changes only when
// the roll does.
func rollLine(st *schema.RollStatus, current []string, problem string) string {
	s := fmt.Sprintf("roll %s: %s, %d/%d done", st.RollID, st.State, st.Done, st.Total)
	if st.State == schema.RollPaused && st.PausedReason != "" {
		s += " (" + st.PausedReason + ")"
	}
	if len(current) > 0 {
		s += "; out: " + strings.Join(current, ", ")
	}
	if len(st.Failed) > 0 {
		s += "; failed: " + strings.Join(st.Failed, ", ")
	}
	if st.Message != "" {
		s += "; " + st.Message
	}
	if st.State == schema.RollPaused && st.Message == "" && len(st.Failed) == 0 {
		s += fmt.Sprintf(" (paused by an operator; `restartcoord roll resume %s` resumes it)", st.RollID)
	}
	if problem != "" {
		s += "; " + problem
	}
	return s
}

package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// renderRestart prints a restart result, one key fact a line.
func renderRestart(w io.Writer, r *schema.RestartResult) {
	outcome := "succeeded"
	if !r.Success {
		outcome = "FAILED"
	}
	fmt.Fprintf(w, "restart of %s %s\n", orDash(r.NodeID), outcome)
	restartFacts(r).write(w, "  ")
}

func restartFacts(r *schema.RestartResult) *facts {
	f := &facts{}
	f.add("success", "%s", yesNo(r.Success))
	f.add("restart_id", "%s", orDash(r.RestartID))
	kind := "graceful"
	if !r.Graceful {
		kind = "emergency (worker killed at once, no drain, no snapshot)"
	}
	f.add("kind", "%s", kind)
	f.add("reason", "%s", orDash(string(r.Reason)))
	f.add("phase", "%s (%d%%)", orDash(string(r.Phase)), r.Progress)
	if r.Message != "" {
		f.add("message", "%s", r.Message)
	}
	f.add("duration", "%s (timeout %s)", fmtSecs(r.Duration), fmtSecs(r.Timeout))
	f.add("started", "%s", fmtTime(r.StartedAt))
	f.add("completed", "%s", fmtTime(r.CompletedAt))
	f.add("worker pid", "%s -> %s", pid(r.OldPID), pid(r.NewPID))
	st := r.State
	if st.SnapshotWritten {
		f.add("state", "preserved: %s (snapshot written and verified first)", yesNo(st.Preserved))
	} else {
		f.add("state", "preserved: %s (no snapshot written; restored from the last snapshot and the journal)", yesNo(st.Preserved))
	}
	f.add("tasks", "%d saved, %d restored", st.TasksSaved, st.TasksRestored)
	f.add("sessions restored", "%d", st.SessionsRestored)
	f.add("journal replayed", "%d entries", st.JournalReplayed)
	if st.SizeBytes > 0 || st.Checksum != "" {
		f.add("state size", "%s", fmtBytesExact(st.SizeBytes))
	}
	if st.Checksum != "" {
		f.add("checksum", "%s", st.Checksum)
	}
	if st.MigratedFrom != 0 && st.MigratedFrom != st.SchemaVersion {
		f.add("schema version", "%d (migrated from %d)", st.SchemaVersion, st.MigratedFrom)
	} else {
		f.add("schema version", "%d", st.SchemaVersion)
	}
	f.add("config_version", "%s", orDash(st.ConfigVersion))
	f.add("buffered requests replayed", "%d", r.BufferedRequestsReplayed)
	f.list("errors", r.Errors, "none")
	if r.Error != nil {
		f.add("error", "%s: %s%s", r.Error.Code, r.Error.Message, detailSuffix(r.Error))
	}
	return f
}

func pid(p int) string {
	if p == 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

// renderHealth prints a health reply.
func renderHealth(w io.Writer, h *schema.Health) {
	fmt.Fprintf(w, "%s (group %s): healthy: %s\n", orDash(h.NodeID), orDash(h.Group), yesNo(h.Healthy))
	f := &facts{}
	f.add("healthy", "%s", yesNo(h.Healthy))
	f.add("phase", "%s", orDash(string(h.Phase)))
	if h.WorkerPID != 0 {
		f.add("worker", "pid %d, up %s", h.WorkerPID, fmtSecs(h.WorkerUptime))
	} else {
		f.add("worker", "not running")
	}
	f.add("node uptime", "%s", fmtSecs(h.UptimeSeconds))
	f.add("server_version", "%s", orDash(h.ServerVersion))
	f.add("config_version", "%s", orDash(h.ConfigVersion))
	f.add("state_schema_version", "%d", h.StateSchemaVersion)
	c := h.Checks
	if db := c.Database; db != nil {
		conn := "connected"
		if !db.Connected {
			conn = "NOT connected"
		}
		f.add("database", "%s, %s, read latency %.2f ms%s", conn, db.Status, db.LatencyMS, measured(db.MeasuredAt))
	}
	if cc := c.Connections; cc != nil {
		f.add("active connections", "%d (%s)%s", cc.ActiveConnections, cc.Status, measured(cc.MeasuredAt))
	}
	if s := c.State; s != nil {
		f.add("state size", "%s%s", fmtBytesExact(s.SizeBytes), measured(s.MeasuredAt))
		f.add("state tasks", "%d", s.Tasks)
		f.add("last snapshot", "%s", fmtTimePtr(s.LastSnapshotAt))
		f.add("backups", "%d", s.Backups)
	}
	if rr := c.RebootReadiness; rr != nil {
		f.add("reboot ready", "%s", yesNo(rr.Ready))
		f.list("readiness issues", rr.Issues, "none")
	}
	f.add("timestamp", "%s", fmtTime(h.Timestamp))
	f.write(w, "  ")
}

// measured notes a value answered from the last reading of the worker.
func measured(t *time.Time) string {
	if t == nil {
		return ""
	}
	return " [last reading " + fmtTime(*t) + "]"
}

// renderStatus prints a restart.status reply.
func renderStatus(w io.Writer, s *schema.RestartStatus) {
	cs := s.CurrentStatus
	fmt.Fprintf(w, "%s restart status: %s\n", orDash(s.NodeID), orDash(string(cs.Phase)))
	f := &facts{}
	f.add("phase", "%s", orDash(string(cs.Phase)))
	f.add("progress", "%d%%", cs.Progress)
	f.add("message", "%s", orDash(cs.Message))
	f.add("maintenance mode", "%s", yesNo(cs.MaintenanceMode))
	if cs.RestartID != "" {
		f.add("restart_id", "%s", cs.RestartID)
	}
	if cs.StartedAt != nil {
		f.add("started", "%s", fmtTime(*cs.StartedAt))
	}
	if cs.EstimatedCompletion != nil {
		f.add("estimated completion", "%s", fmtTime(*cs.EstimatedCompletion))
	}
	if cs.ErrorCount != nil {
		f.add("errors", "%d", *cs.ErrorCount)
	} else if len(cs.Errors) > 0 {
		f.list("errors", cs.Errors, "none")
	}
	f.add("timestamp", "%s", fmtTime(s.Timestamp))
	f.write(w, "  ")
	h := s.History
	if h == nil {
		return
	}
	fmt.Fprintf(w, "\nrecent restarts (%d shown, newest first):\n", len(h.RecentRestarts))
	if len(h.RecentRestarts) > 0 {
		rows := make([][]string, 0, len(h.RecentRestarts))
		ok, sum := 0, 0.0
		for _, e := range h.RecentRestarts {
			if e.Success {
				ok++
			}
			sum += e.Duration
			errs := len(e.Errors)
			if e.ErrorCount != nil {
				errs = *e.ErrorCount
			}
			rows = append(rows, []string{e.Timestamp.UTC().Format(time.RFC3339), string(e.Reason),
				yesNo(e.Graceful), yesNo(e.Success), fmtSecs(e.Duration),
				pid(e.OldPID) + " -> " + pid(e.NewPID), strconv.Itoa(errs), e.RestartID})
		}
		table(w, "  ", []string{"TIME", "REASON", "GRACEFUL", "SUCCESS", "DURATION", "PID", "ERRORS", "RESTART_ID"}, rows)
		fmt.Fprintf(w, "  shown: %d succeeded, %d failed, average duration %s\n", ok, len(h.RecentRestarts)-ok,
			fmtSecs(sum/float64(len(h.RecentRestarts))))
	}
	t := &facts{}
	t.add("total restarts", "%d", h.TotalRestarts)
	t.add("last successful", "%s", fmtTimePtr(h.LastSuccessfulRestart))
	t.add("last failed", "%s", fmtTimePtr(h.LastFailedRestart))
	t.write(w, "  ")
}

// renderPrepare prints a shutdown.prepare reply.
func renderPrepare(w io.Writer, node string, r *schema.ShutdownReadiness) {
	fmt.Fprintf(w, "%s ready for shutdown: %s\n", node, yesNo(r.ReadyForShutdown))
	f := &facts{}
	f.add("ready_for_shutdown", "%s", yesNo(r.ReadyForShutdown))
	f.list("blocking issues", r.BlockingIssues, "none")
	if c := r.Checks.ActiveTasks; c != nil {
		f.add("active tasks", "%d, suspendable: %s (%s)", c.Count, yesNo(c.Suspendable), c.Status)
	}
	if c := r.Checks.Database; c != nil {
		f.add("database", "%d transactions pending, %d connections open (%s)", c.TransactionsPending, c.ConnectionsOpen, c.Status)
	}
	if c := r.Checks.ClientConnections; c != nil {
		f.add("client connections", "%d active, notifiable: %s (%s)", c.ActiveConnections, yesNo(c.Notifiable), c.Status)
	}
	f.add("timestamp", "%s", fmtTime(r.Timestamp))
	f.write(w, "  ")
}

// renderReconnect prints a reconnect.test reply.
func renderReconnect(w io.Writer, node string, r *schema.ReconnectTest) {
	fmt.Fprintf(w, "%s reconnect test: %s\n", node, orDash(r.OverallStatus))
	f := &facts{}
	f.add("overall status", "%s", orDash(r.OverallStatus))
	f.add("test completed", "%s", yesNo(r.TestCompleted))
	res := r.Results
	if a := res.AllSessions; a != nil {
		f.add("all sessions", "%s: %d total, %d reachable, %d reconnect capable", a.Status, a.TotalSessions, a.ReachableSessions, a.ReconnectCapable)
	}
	if s := res.SessionTest; s != nil {
		f.add("session", "%s: %s, known %s, reachable %s, reconnect capable %s, %d buffered requests",
			s.Status, s.SessionID, yesNo(s.Known), yesNo(s.Reachable), yesNo(s.ReconnectCapable), s.BufferedRequests)
		if s.Reachable {
			f.add("session ping", "%.2f ms", s.PingMS)
		}
		if s.LastActivity != nil {
			f.add("last activity", "%s", fmtTime(*s.LastActivity))
		}
	}
	if b := res.BufferStatus; b != nil {
		f.add("buffer status", "%s: %d buffered requests in %d sessions", b.Status, b.TotalBufferedRequests, b.SessionsWithBuffers)
		ids := make([]string, 0, len(b.PerSession))
		for id := range b.PerSession {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			f.rows = append(f.rows, fact{value: fmt.Sprintf("%s: %d", id, b.PerSession[id]), item: true})
		}
	}
	if s := res.ReconnectionStats; s != nil {
		f.add("reconnection stats", "%s: %d successful, %d failed, average %s", s.Status, s.SuccessfulReconnections,
			s.FailedReconnections, fmtSecs(s.AverageReconnectionTime))
	}
	f.add("timestamp", "%s", fmtTime(r.Timestamp))
	f.write(w, "  ")
}

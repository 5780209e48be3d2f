package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// snapshotLine describes a snapshot in one line.
func snapshotLine(s *schema.SnapshotInfo) string {
	if s.SnapshotID == "" {
		return "-"
	}
	idx := ""
	if s.Index > 0 {
		idx = fmt.Sprintf("#%d ", s.Index)
	}
	return fmt.Sprintf("%ssnapshot %s taken %s (%s), %d tasks, %d sessions, %s, schema %d, journal seq %d",
		idx, s.SnapshotID, fmtTime(s.TakenAt), orDash(s.Trigger), s.Tasks, s.Sessions, fmtBytes(s.SizeBytes),
		s.SchemaVersion, s.JournalSeq)
}

// renderBackup prints the reply of state.backup.
func renderBackup(w io.Writer, node string, s *schema.SnapshotInfo) {
	fmt.Fprintf(w, "backup of %s taken: snapshot %s\n", node, s.SnapshotID)
	f := &facts{}
	f.add("snapshot_id", "%s", s.SnapshotID)
	f.add("taken", "%s", fmtTime(s.TakenAt))
	f.add("trigger", "%s", orDash(s.Trigger))
	f.add("tasks", "%d", s.Tasks)
	f.add("sessions", "%d", s.Sessions)
	f.add("size", "%s", fmtBytesExact(s.SizeBytes))
	f.add("schema version", "%d", s.SchemaVersion)
	f.add("journal seq", "%d", s.JournalSeq)
	f.add("checksum", "%s", orDash(s.Checksum))
	f.write(w, "  ")
	fmt.Fprintf(w, "restore it with: restartcoord state restore %s --backup %s --yes\n", node, s.SnapshotID)
}

// renderBackups prints the reply of state.backups as a table.
func renderBackups(w io.Writer, l *schema.BackupList) {
	if len(l.Backups) == 0 {
		fmt.Fprintf(w, "%s has no backups (take one with: restartcoord state backup %s)\n", l.NodeID, l.NodeID)
		return
	}
	fmt.Fprintf(w, "%s backups (%d, 1 = newest):\n", l.NodeID, len(l.Backups))
	rows := make([][]string, 0, len(l.Backups))
	for _, b := range l.Backups {
		rows = append(rows, []string{strconv.Itoa(b.Index), b.TakenAt.UTC().Format(time.RFC3339), orDash(b.Trigger),
			strconv.Itoa(b.Tasks), strconv.Itoa(b.Sessions), fmtBytes(b.SizeBytes), strconv.Itoa(b.SchemaVersion),
			strconv.FormatUint(b.JournalSeq, 10), b.SnapshotID})
	}
	table(w, "  ", []string{"#", "TAKEN", "TRIGGER", "TASKS", "SESSIONS", "SIZE", "SCHEMA", "JOURNAL_SEQ", "SNAPSHOT_ID"}, rows)
}

// renderRestore prints the reply of state.restore.
func renderRestore(w io.Writer, r *schema.StateRestore) {
	fmt.Fprintf(w, "state of %s restored\n", orDash(r.NodeID))
	f := &facts{}
	f.add("restored to", "%s", snapshotLine(&r.RestoredTo))
	f.add("archived first as", "%s", snapshotLine(&r.ArchivedAs))
	d := r.Discarded
	f.add("discarded: tasks created since", "%s", fmtIDs(d.TasksCreated, 20))
	f.add("discarded: tasks changed since", "%s", fmtIDs(d.TasksChanged, 20))
	f.add("discarded: tasks removed since", "%s", fmtIDs(d.TasksRemoved, 20))
	f.add("discarded: journal writes", "%d", d.JournalWrites)
	f.write(w, "  ")
	if r.ArchivedAs.SnapshotID != "" {
		fmt.Fprintf(w, "  (undo with: restartcoord state restore %s --backup %s --yes)\n", r.NodeID, r.ArchivedAs.SnapshotID)
	}
	fmt.Fprintf(w, "restart that applied it:\n")
	restartFacts(&r.Restart).write(w, "  ")
}

// renderTask prints one task.
func renderTask(w io.Writer, t *schema.Task) {
	fmt.Fprintf(w, "task %s: %q\n", t.TaskID, t.Title)
	f := &facts{}
	f.add("status", "%s", t.Status)
	f.add("progress", "%s%%", strconv.FormatFloat(t.Progress, 'f', -1, 64))
	if t.Description != "" {
		f.add("description", "%s", t.Description)
	}
	if t.Job != nil {
		f.add("job", "%d of %d steps done (%s each)", t.StepsDone, t.Job.Steps, fmtSecs(t.Job.StepSeconds))
	}
	if len(t.Checkpoint) > 0 {
		f.add("checkpoint", "%s", compactJSON(t.Checkpoint))
	}
	if len(t.Result) > 0 {
		f.add("result", "%s", compactJSON(t.Result))
	}
	if t.Error != "" {
		f.add("error", "%s", t.Error)
	}
	f.add("created", "%s", fmtTime(t.CreatedAt))
	f.add("updated", "%s", fmtTime(t.UpdatedAt))
	f.write(w, "  ")
}

// renderTaskList prints one page of tasks.
func renderTaskList(w io.Writer, node string, l *schema.TaskList) {
	if len(l.Tasks) == 0 {
		fmt.Fprintf(w, "%s: no tasks\n", node)
	} else {
		fmt.Fprintf(w, "%s: %d tasks\n", node, len(l.Tasks))
		rows := make([][]string, 0, len(l.Tasks))
		for _, t := range l.Tasks {
			job := "-"
			if t.Job != nil {
				job = fmt.Sprintf("%d/%d", t.StepsDone, t.Job.Steps)
			}
			rows = append(rows, []string{t.TaskID, string(t.Status), strconv.FormatFloat(t.Progress, 'f', -1, 64) + "%",
				job, t.UpdatedAt.UTC().Format(time.RFC3339), t.Title})
		}
		table(w, "  ", []string{"TASK_ID", "STATUS", "PROGRESS", "STEPS", "UPDATED", "TITLE"}, rows)
	}
	if l.Next != "" {
		fmt.Fprintf(w, "more: restartcoord task list %s --after %s\n", node, l.Next)
	}
}

func compactJSON(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return string(raw)
	}
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

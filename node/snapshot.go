package node

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/schema"
)

// takeSnapshot writes a verified snapshot of the state as it is now, prunes
// to the newest KeepSnapshots and compacts the journal behind the second
// newest (so one older snapshot plus the journal can still restore).
func (w *worker) takeSnapshot(ctx context.Context, trigger string) (*schema.SnapshotInfo, error) {
	w.snapMu.Lock()
	defer w.snapMu.Unlock()
	st, seq := w.st.export(w.env.ReplyKeep, w.env.Config.ConfigVersion)
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	snap, err := schema.NewSnapshot(w.env.NodeID, id.String(), trigger, time.Now(), seq, st, w.env.StateSchema)
	if err != nil {
		return nil, err
	}
	info, err := w.bs.PutSnapshot(ctx, snap, len(st.Tasks), len(st.Sessions))
	if err != nil {
		return nil, err
	}
	if info.SizeBytes > w.env.MaxStateSize {
		w.log.Warn(fmt.Sprintf("state of %s is %d bytes, above %d", w.env.NodeID, info.SizeBytes, w.env.MaxStateSize))
	}
	// Every snapshot, above the maximum or not: the supervisor raises
	// state_size and resolves it with a later snapshot under it.
	_ = w.ipc.Event(evSnapshot, snapshotEvent{SnapshotID: info.SnapshotID, Trigger: trigger, SizeBytes: info.SizeBytes,
		MaxStateSize: w.env.MaxStateSize})
	list, err := w.bs.ListSnapshots(ctx, w.env.NodeID)
	if err != nil {
		return &info, nil
	}
	// Compact first, then prune: whoever sees the pruned list sees the
	// journal compacted behind its second newest snapshot.
	if len(list) >= 2 {
		if err := w.bs.Compact(ctx, w.env.NodeID, list[1].JournalSeq); err != nil {
			w.log.Warn("compacting journal", "err", err)
		}
	}
	for _, old := range list {
		if old.Index > w.env.KeepSnapshots {
			if err := w.bs.DeleteSnapshot(ctx, w.env.NodeID, old.SnapshotID); err != nil {
				w.log.Warn("pruning snapshot", "snapshot", old.SnapshotID, "err", err)
			}
		}
	}
	w.mu.Lock()
	w.lastSnap = &info
	w.backups = min(len(list), w.env.KeepSnapshots)
	w.mu.Unlock()
	return &info, nil
}

// diff says what restoring snapshot id would discard of the current state.
func (w *worker) diff(ctx context.Context, id string) (*schema.DiscardReport, error) {
	snap, err := w.bs.GetSnapshot(ctx, w.env.NodeID, id)
	if err != nil {
		return nil, err
	}
	old, _, err := snap.State()
	if err != nil {
		return nil, err
	}
	then := make(map[string]*schema.Task, len(old.Tasks))
	for i := range old.Tasks {
		then[old.Tasks[i].TaskID] = &old.Tasks[i]
	}
	rep := &schema.DiscardReport{TasksCreated: []string{}, TasksChanged: []string{}, TasksRemoved: []string{}}
	w.st.mu.Lock()
	for tid, t := range w.st.tasks {
		o, ok := then[tid]
		switch {
		case !ok:
			rep.TasksCreated = append(rep.TasksCreated, tid)
		case !o.Equal(t):
			rep.TasksChanged = append(rep.TasksChanged, tid)
		}
	}
	for tid := range then {
		if _, ok := w.st.tasks[tid]; !ok {
			rep.TasksRemoved = append(rep.TasksRemoved, tid)
		}
	}
	w.st.mu.Unlock()
	n, err := w.bs.Replay(ctx, w.env.NodeID, snap.JournalSeq, func(uint64, *schema.JournalEntry) error { return nil })
	if err == nil {
		rep.JournalWrites = n
	}
	sortStrings(rep.TasksCreated)
	sortStrings(rep.TasksChanged)
	sortStrings(rep.TasksRemoved)
	return rep, nil
}

// gcPercentLoading is the garbage collector's target (GOGC) while a new
// worker reads, decodes and installs its snapshot. The process starts with
// a small heap and allocates the state several times over (the download,
// the decompressed snapshot, the decoded state, the store); at the default
// 100 it collects at every doubling of a heap that is nearly all live. For
// 10,000 tasks of ~1 KB this saves ~40 ms of loading, for a peak heap of a
// few times the state.
const gcPercentLoading = 400

// loadingGC raises the GC target to gcPercentLoading (unless it is off or
// higher already) and returns the function that puts it back, once.
func loadingGC() func() {
	prev := debug.SetGCPercent(gcPercentLoading)
	if prev < 0 || prev > gcPercentLoading {
		debug.SetGCPercent(prev)
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { debug.SetGCPercent(prev) }) }
}

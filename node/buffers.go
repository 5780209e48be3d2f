package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/schema"
)

// bufferWatch is what watchBuffers keeps between passes.
type bufferWatch struct {
	limit    int       // the per-client buffer (read once)
	backupAt time.Time // when backup_age was last checked
}

// NodeBufferWarn is the seed's "more than 100 requests buffered" threshold.
const NodeBufferWarn = 100

// ClientBufferWarnPercent: a client's buffer this full raises buffer_capacity.
const ClientBufferWarnPercent = 80

// watchBuffers checks, every 5 heartbeat intervals, the request buffers
// and the log file's size, and the age of the newest backup every
// backupCheckEvery.
func (s *Supervisor) watchBuffers(ctx context.Context) {
	t := time.NewTicker(5 * s.cfg.HeartbeatInterval)
	defer t.Stop()
	bw := &bufferWatch{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s.checkBuffers(cctx, bw)
		s.checkLogSize()
		if now := time.Now(); now.Sub(bw.backupAt) >= s.backupCheckEvery() {
			bw.backupAt = now
			s.checkBackupAge(cctx, now)
		}
		cancel()
	}
}

// checkBuffers counts the requests waiting in the node's buffer (the
// heartbeat's buffered_requests) and raises buffer_capacity while a
// client's buffer is ClientBufferWarnPercent full or more than
// NodeBufferWarn requests wait on the node in all. The two share the
// node's one buffer_capacity fingerprint: it fires when the first of them
// begins (its details name the clients at 80% and the total) and is
// resolved once neither holds (no client at 80%, the total at or under
// NodeBufferWarn); while it is open, another client filling up or the
// total crossing too raises nothing more.
func (s *Supervisor) checkBuffers(ctx context.Context, bw *bufferWatch) {
	if bw.limit == 0 {
		limit, err := s.bs.RequestBufferLimit(ctx)
		if err != nil || limit <= 0 {
			return
		}
		bw.limit = limit
	}
	depths, err := s.bs.BufferDepths(ctx, s.cfg.NodeID)
	if err != nil {
		return
	}
	total := 0
	var full []string
	for client, n := range depths {
		total += n
		if n*100 >= bw.limit*ClientBufferWarnPercent {
			full = append(full, client)
		}
	}
	s.met.bufferedRequests(total)
	s.mu.Lock()
	s.buffered = total // the heartbeat's buffered_requests
	s.mu.Unlock()
	over := total > NodeBufferWarn
	details := map[string]any{"total_buffered": total, "threshold": NodeBufferWarn, "limit": bw.limit}
	if len(full) == 0 && !over {
		s.settle(schema.AlertBufferCapacity, fmt.Sprintf("buffers of %s under capacity again: %d requests buffered, no client at %d%% of %d",
			s.cfg.NodeID, total, ClientBufferWarnPercent, bw.limit), details)
		return
	}
	if s.conds.isOpen(schema.AlertBufferCapacity) {
		return
	}
	msg := fmt.Sprintf("%d requests buffered on %s (warning above %d)", total, s.cfg.NodeID, NodeBufferWarn)
	if len(full) > 0 {
		slices.Sort(full)
		clients := map[string]int{}
		for _, c := range full {
			clients[c] = depths[c]
		}
		details["clients"], details["client_id"], details["buffered"] = clients, full[0], depths[full[0]]
		msg = fmt.Sprintf("client %s has %d of %d requests buffered on %s", full[0], depths[full[0]], bw.limit, s.cfg.NodeID)
		if len(full) > 1 {
			msg += fmt.Sprintf(" (and %d more clients at %d%%)", len(full)-1, ClientBufferWarnPercent)
		}
	}
	s.raise(schema.AlertBufferCapacity, msg, details)
}

// backupCheckEvery is how often the newest backup's age is checked: every
// 5 minutes, or ten times per BackupMaxAge when that is shorter (a test's).
func (s *Supervisor) backupCheckEvery() time.Duration {
	return min(5*time.Minute, s.cfg.BackupMaxAge/10)
}

// checkBackupAge raises backup_age while the newest backup is older than
// BackupMaxAge, or while there is none on a node whose supervisor has run
// that long (a younger one without a backup raises nothing); a fresh
// backup resolves it. The backups are what `restartcoord state backups`
// lists and `state restore` restores from: every snapshot the node keeps,
// whatever its trigger (restart, periodic, manual, archive, restore,
// migration, shutdown). Periodic snapshots keep the newest fresh while a
// worker serves and can write them; it ages when they stop (no worker
// serving, snapshots failing, a snapshot interval longer than the age).
func (s *Supervisor) checkBackupAge(ctx context.Context, now time.Time) {
	list, err := s.bs.ListSnapshots(ctx, s.cfg.NodeID)
	if err != nil {
		return
	}
	maxAge := s.cfg.BackupMaxAge
	var newest *schema.SnapshotInfo
	for i := range list {
		if !list[i].TakenAt.IsZero() { // metadata that says when: restorable by index or id
			newest = &list[i]
			break
		}
	}
	switch {
	case newest == nil && now.Sub(s.started) <= maxAge:
		// A node younger than the maximum age without a backup yet.
	case newest == nil:
		s.raise(schema.AlertBackupAge, fmt.Sprintf("%s has no backup, and has run for %s (a backup is due every %s)",
			s.cfg.NodeID, now.Sub(s.started).Round(time.Second), maxAge),
			map[string]any{"node_started_at": s.started.UTC(), "max_age_seconds": maxAge.Seconds()})
	case now.Sub(newest.TakenAt) > maxAge:
		s.raise(schema.AlertBackupAge, fmt.Sprintf("newest backup of %s is %s old (over %s)", s.cfg.NodeID,
			now.Sub(newest.TakenAt).Round(time.Second), maxAge),
			map[string]any{"snapshot_id": newest.SnapshotID, "taken_at": newest.TakenAt, "trigger": newest.Trigger,
				"max_age_seconds": maxAge.Seconds()})
	default:
		s.settle(schema.AlertBackupAge, fmt.Sprintf("%s has a backup %s old again (under %s)", s.cfg.NodeID,
			now.Sub(newest.TakenAt).Round(time.Second), maxAge),
			map[string]any{"snapshot_id": newest.SnapshotID, "taken_at": newest.TakenAt, "trigger": newest.Trigger,
				"max_age_seconds": maxAge.Seconds()})
	}
}

// logPath is the node's log file: its workers' output, appended.
func (s *Supervisor) logPath() string { return filepath.Join(s.cfg.LogDir, s.cfg.NodeID+".log") }

// checkLogSize raises log_size while the node's log file is larger than
// LogMaxSize and resolves it once the file is under it again (rotated or
// truncated by the operator; the node never truncates it). A file that
// does not exist is empty.
func (s *Supervisor) checkLogSize() {
	var size int64
	if fi, err := os.Stat(s.logPath()); err == nil {
		size = fi.Size()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return
	}
	details := map[string]any{"path": s.logPath(), "size_bytes": size, "max_size_bytes": s.cfg.LogMaxSize}
	if size > s.cfg.LogMaxSize {
		s.raise(schema.AlertLogSize, fmt.Sprintf("log file %s of %s is %d bytes, above %d", s.logPath(), s.cfg.NodeID, size, s.cfg.LogMaxSize), details)
		return
	}
	s.settle(schema.AlertLogSize, fmt.Sprintf("log file %s of %s is %d bytes, under %d again", s.logPath(), s.cfg.NodeID, size, s.cfg.LogMaxSize), details)
}

func (s *Supervisor) handleClients(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	var req schema.ClientsRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	st, fresh := s.readStats(ctx, time.Second)
	depths, err := s.bs.BufferDepths(ctx, s.cfg.NodeID)
	if err != nil {
		return nil, schema.Errorf(schema.CodeInternal, "reading the request buffer: %v", err)
	}
	limit, _ := s.bs.RequestBufferLimit(ctx)
	out := &schema.ClientList{Type: schema.TypeClientList, NodeID: s.cfg.NodeID, BufferLimit: limit, Clients: []schema.ClientInfo{}}
	seen := map[string]bool{}
	if st != nil {
		if !fresh {
			m := st.MeasuredAt
			out.MeasuredAt = &m
		}
		for _, x := range st.Sessions {
			seen[x.ClientID] = true
			out.Clients = append(out.Clients, schema.ClientInfo{Session: x, Buffered: depths[x.ClientID]})
		}
	}
	// Clients with requests waiting whose session starts with them.
	for client, n := range depths {
		if !seen[client] {
			out.Clients = append(out.Clients, schema.ClientInfo{Session: schema.Session{SessionID: client, ClientID: client}, Buffered: n})
		}
	}
	for _, c := range out.Clients {
		out.TotalBuffered += c.Buffered
	}
	slices.SortFunc(out.Clients, func(a, b schema.ClientInfo) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out, nil
}

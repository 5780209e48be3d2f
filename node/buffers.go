package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/schema"
)

// bufferWatch raises the seed's buffer warnings as buffer_capacity alerts:
// a client's buffer 80% full, or more than 100 requests buffered on the
// node. Each is raised once when it begins and again only after it cleared.
type bufferWatch struct {
	limit    int
	full     map[string]bool
	nodeHigh bool
}

// NodeBufferWarn is the seed's "more than 100 requests buffered" threshold.
const NodeBufferWarn = 100

func (s *Supervisor) watchBuffers(ctx context.Context) {
	t := time.NewTicker(5 * s.cfg.HeartbeatInterval)
	defer t.Stop()
	bw := &bufferWatch{full: map[string]bool{}}
	oldBackup := false
	for pass := 0; ; pass++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s.checkBuffers(cctx, bw)
		if pass%60 == 0 {
			oldBackup = s.checkBackupAge(cctx, oldBackup)
		}
		cancel()
	}
}

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
	for client, n := range depths {
		total += n
		high := n*10 >= bw.limit*8
		if high && !bw.full[client] {
			s.alert(schema.SeverityWarning, "buffer_capacity",
				fmt.Sprintf("client %s has %d of %d requests buffered on %s", client, n, bw.limit, s.cfg.NodeID),
				map[string]any{"client_id": client, "buffered": n, "limit": bw.limit})
		}
		bw.full[client] = high
	}
	s.met.bufferedRequests(total)
	for client := range bw.full {
		if depths[client] == 0 {
			delete(bw.full, client)
		}
	}
	s.mu.Lock()
	s.buffered = total // the heartbeat's buffered_requests
	s.mu.Unlock()
	high := total > NodeBufferWarn
	if high && !bw.nodeHigh {
		s.alert(schema.SeverityWarning, "buffer_capacity",
			fmt.Sprintf("%d requests buffered on %s (warning above %d)", total, s.cfg.NodeID, NodeBufferWarn),
			map[string]any{"total_buffered": total, "threshold": NodeBufferWarn})
	}
	bw.nodeHigh = high
}

// BackupMaxAge: the seed's low-priority alert for backups older than 7 days.
const BackupMaxAge = 7 * 24 * time.Hour

// checkBackupAge raises backup_age once when the newest backup gets older
// than BackupMaxAge; it returns whether that is the case now.
func (s *Supervisor) checkBackupAge(ctx context.Context, was bool) bool {
	list, err := s.bs.ListSnapshots(ctx, s.cfg.NodeID)
	if err != nil || len(list) == 0 {
		return was
	}
	age := time.Since(list[0].TakenAt)
	old := age > BackupMaxAge
	if old && !was {
		s.alert(schema.SeverityInfo, "backup_age", fmt.Sprintf("newest backup of %s is %s old", s.cfg.NodeID, age.Round(time.Hour)),
			map[string]any{"snapshot_id": list[0].SnapshotID, "taken_at": list[0].TakenAt})
	}
	return old
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

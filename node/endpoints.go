package node

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

func (s *Supervisor) serviceConfig() bus.ServiceConfig {
	ep := func(op string, h bus.Handler) bus.Endpoint {
		return bus.Endpoint{Name: strings.ReplaceAll(op, ".", "_"), Subject: schema.NodeSubject(s.cfg.NodeID, op), Handler: h}
	}
	return bus.ServiceConfig{
		Name: schema.ServiceNode, Version: semverOr(s.cfg.Version), Description: "restartcoord node " + s.cfg.NodeID,
		Metadata: map[string]string{"node_id": s.cfg.NodeID, "group": s.cfg.Group, "priority": strconv.Itoa(s.cfg.Priority)},
		Endpoints: []bus.Endpoint{
			ep(schema.OpRestart, s.handleRestart),
			ep(schema.OpHealth, s.handleHealth),
			ep(schema.OpPrepare, s.handlePrepare),
			ep(schema.OpRestartStatus, s.handleStatus),
			ep(schema.OpReconnectTest, s.handleReconnectTest),
			ep(schema.OpStateBackup, s.handleBackup),
			ep(schema.OpStateBackups, s.handleBackups),
			ep(schema.OpStateRestore, s.handleRestore),
			ep(schema.OpReply, s.handleReply),
			ep(schema.OpClients, s.handleClients),
		},
	}
}

// semverOr gives micro a semantic version (it refuses anything else).
func semverOr(v string) string {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) == 3 {
		if _, err := strconv.Atoi(parts[0]); err == nil {
			return v
		}
	}
	return "0.0.0-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, v)
}

func (s *Supervisor) audit(op string, hdr nats.Header, params any, err error) {
	a := schema.Audit{Type: schema.TypeAudit, Operation: op, NodeID: s.cfg.NodeID, User: "anonymous",
		Success: err == nil, Error: schema.AsError(err), Timestamp: time.Now().UTC()}
	// Only the server-added request info is trusted for identity.
	if ri := hdr.Get(schema.HeaderRequestInfo); ri != "" {
		var info struct {
			Acc  string `json:"acc"`
			User string `json:"user"`
			Host string `json:"host"`
		}
		if json.Unmarshal([]byte(ri), &info) == nil {
			a.User, a.Source = info.Acc+"/"+info.User, info.Host
		}
	}
	if b, e := json.Marshal(params); e == nil {
		_ = json.Unmarshal(b, &a.Parameters)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.bs.PublishDurable(ctx, schema.AuditSubject(op), a); err != nil {
			s.log.Warn("audit record not stored", "op", op, "err", err)
		}
	}()
}

func fencingToken(hdr nats.Header) (uint64, error) {
	v := hdr.Get(schema.HeaderFencingToken)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return 0, schema.Invalid(schema.HeaderFencingToken, "%s must be a positive integer, got %q", schema.HeaderFencingToken, v)
	}
	return n, nil
}

func (s *Supervisor) handleRestart(ctx context.Context, data []byte, hdr nats.Header) (any, error) {
	req := schema.DefaultRestartRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	fence, err := fencingToken(hdr)
	if err != nil {
		return nil, err
	}
	res, err := s.Restart(ctx, req, fence)
	if err == nil && !res.Success {
		s.audit(schema.OpRestart, hdr, req, res.Error)
	} else {
		s.audit(schema.OpRestart, hdr, req, err)
	}
	return res, err
}

func (s *Supervisor) handleHealth(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := schema.DefaultHealthRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	return s.Health(ctx, req), nil
}

// Health measures the node now.
func (s *Supervisor) Health(ctx context.Context, req schema.HealthRequest) *schema.Health {
	st, fresh := s.readStats(ctx, 500*time.Millisecond)
	now := time.Now().UTC()
	s.mu.Lock()
	h := &schema.Health{Type: schema.TypeHealth, Timestamp: now, ServerVersion: s.cfg.Version, NodeID: s.cfg.NodeID,
		Group: s.cfg.Group, Phase: s.phase, UptimeSeconds: schema.Secs(time.Since(s.started)),
		ConfigVersion: s.nodeConfig.ConfigVersion, StateSchemaVersion: s.stateSchema}
	cur := s.cur
	s.mu.Unlock()
	var measuredAt *time.Time
	if st != nil && !fresh {
		m := st.MeasuredAt
		measuredAt = &m
	}
	h.MeasuredAt = measuredAt
	if st != nil && fresh {
		h.WorkerPID = st.PID
		h.WorkerUptime = schema.Secs(st.MeasuredAt.Sub(st.StartedAt))
		h.ConfigVersion, h.StateSchemaVersion = st.ConfigVersion, st.SchemaVersion
	}
	h.Healthy = fresh && s.healthy(st)
	if req.IncludeRebootReadiness {
		issues := s.blockingIssues(st, fresh, cur)
		h.Checks.RebootReadiness = &schema.ReadinessCheck{Ready: len(issues) == 0, Issues: issues,
			Details: map[string]any{"worker_pid": h.WorkerPID, "phase": h.Phase, "nats_connected": s.conn.IsConnected()}}
	}
	if req.IncludeDatabaseStatus {
		db := &schema.DatabaseCheck{Connected: s.conn.IsConnected(), Status: "operational"}
		t0 := time.Now()
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := s.nodes.Get(lctx, s.cfg.NodeID)
		cancel()
		db.LatencyMS = float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			db.Status = "error: " + err.Error()
		} else if !db.Connected {
			db.Status = "disconnected"
		}
		h.Checks.Database = db
	}
	if req.IncludeConnectionStatus {
		c := &schema.ConnectionsCheck{Status: "operational", MeasuredAt: measuredAt}
		if st != nil {
			c.ActiveConnections = st.ActiveSessions
		}
		if !fresh {
			c.Status = "unknown: worker not answering"
		}
		h.Checks.Connections = c
	}
	sc := &schema.StateCheck{MeasuredAt: measuredAt}
	if st != nil {
		sc.SizeBytes, sc.Tasks, sc.Backups = st.StateSizeBytes, st.Tasks, st.Backups
		if st.LastSnapshot != nil {
			t := st.LastSnapshot.TakenAt
			sc.LastSnapshotAt = &t
		}
	}
	h.Checks.State = sc
	return h
}

func (s *Supervisor) blockingIssues(st *workerStats, fresh bool, cur *restartOp) []string {
	issues := []string{}
	if cur != nil {
		issues = append(issues, fmt.Sprintf("restart %s already in progress", cur.res.RestartID))
	}
	if _, ok := s.currentWorker(); !ok {
		issues = append(issues, "worker process not running")
	} else if !fresh {
		issues = append(issues, "worker not answering")
	}
	if !s.conn.IsConnected() {
		issues = append(issues, "NATS connection down")
	}
	if st != nil && fresh && st.Maintenance && cur == nil {
		issues = append(issues, "worker in maintenance mode")
	}
	return issues
}

func (s *Supervisor) handlePrepare(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := schema.DefaultPrepareRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	st, fresh := s.readStats(ctx, 500*time.Millisecond)
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	out := &schema.ShutdownReadiness{Type: schema.TypeShutdownReadiness, Timestamp: time.Now().UTC(),
		BlockingIssues: s.blockingIssues(st, fresh, cur)}
	if st == nil {
		st = &workerStats{}
	}
	if req.CheckActiveTasks {
		out.Checks.ActiveTasks = activeTasksCheck(st, fresh, s.cfg.SuspendTimeout, time.Now())
	}
	if req.CheckDatabaseState {
		open := 0
		if s.conn.IsConnected() {
			open++
		}
		if fresh && st.NATSConnected {
			open++
		}
		d := &schema.DatabaseReadiness{TransactionsPending: st.PendingWrites, ConnectionsOpen: open, Status: "ready"}
		if st.PendingWrites > 0 {
			d.Status = "pending"
		}
		if !s.conn.IsConnected() {
			d.Status = "disconnected"
		}
		out.Checks.Database = d
	}
	if req.CheckClientConnections {
		notifiable := s.conn.IsConnected()
		c := &schema.ClientReadiness{ActiveConnections: st.ActiveSessions, Notifiable: notifiable, Status: "ready"}
		if !notifiable {
			c.Status = "not_notifiable"
		}
		out.Checks.ClientConnections = c
	}
	// Jobs a drain would stop mid-step block: their step would run again.
	if a := out.Checks.ActiveTasks; a != nil && a.Status == "waiting" {
		out.BlockingIssues = append(out.BlockingIssues, a.Reason)
	}
	out.ReadyForShutdown = len(out.BlockingIssues) == 0
	return out, nil
}

func (s *Supervisor) handleStatus(_ context.Context, data []byte, _ nats.Header) (any, error) {
	req := schema.DefaultStatusRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	out := &schema.RestartStatus{Type: schema.TypeRestartStatus, Timestamp: time.Now().UTC(), NodeID: s.cfg.NodeID}
	s.mu.Lock()
	cs := schema.CurrentStatus{Phase: s.phase, Progress: s.phase.Progress(), Message: s.phaseMsg}
	if s.phase == schema.PhaseIdle {
		cs.Progress = 0
	}
	if cur := s.cur; cur != nil {
		started := cur.started.UTC()
		eta := started.Add(cur.expect)
		if now := time.Now().UTC(); eta.Before(now) {
			// Slower than usual: expect a quarter of a typical restart more.
			eta = now.Add(max(cur.expect/4, 500*time.Millisecond))
		}
		cs.RestartID, cs.StartedAt, cs.EstimatedCompletion = cur.res.RestartID, &started, &eta
		cs.Errors = append([]string{}, cur.res.Errors...)
		switch s.phase {
		case schema.PhaseMaintenanceMode, schema.PhaseSuspendingTasks, schema.PhaseSerializingState,
			schema.PhaseClosingConnections, schema.PhaseStopping, schema.PhaseStartingProcess,
			schema.PhaseLoadingState, schema.PhaseRestoringState, schema.PhaseResumingTasks:
			cs.MaintenanceMode = true
		}
	}
	s.mu.Unlock()
	if !req.IncludeErrorDetails {
		n := len(cs.Errors)
		cs.Errors, cs.ErrorCount = nil, &n
	}
	out.CurrentStatus = cs
	if req.IncludeHistory {
		out.History = s.hist.status(req.Limit, req.IncludeErrorDetails)
	}
	return out, nil
}

func (s *Supervisor) handleReconnectTest(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := schema.DefaultReconnectTestRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	st, _ := s.readStats(ctx, time.Second)
	if st == nil {
		return nil, schema.Errorf(schema.CodeSystemNotReady, "no reading of the worker yet").WithDetail("blocking_issues", []string{"worker not running"})
	}
	depths, err := s.bs.BufferDepths(ctx, s.cfg.NodeID)
	if err != nil {
		return nil, schema.Errorf(schema.CodeInternal, "reading the request buffer: %v", err)
	}
	out := &schema.ReconnectTest{Type: schema.TypeReconnectTest, TestCompleted: true, Timestamp: time.Now().UTC()}
	statuses := []string{}
	sessions := st.Sessions
	if req.SessionID != "" {
		sessions = nil
		for _, x := range st.Sessions {
			if x.SessionID == req.SessionID {
				sessions = append(sessions, x)
			}
		}
	}
	pings := s.pingClients(ctx, sessions)
	if req.SessionID != "" {
		t := &schema.SessionTest{SessionID: req.SessionID, Status: schema.StatusFail, BufferedRequests: depths[req.SessionID]}
		if len(sessions) == 1 {
			x := sessions[0]
			p := pings[x.ClientID]
			la := x.LastActivity
			t.Known, t.Reachable, t.ReconnectCapable, t.LastActivity = true, p.ok, p.ok && p.capable, &la
			if p.ok {
				t.Status, t.PingMS = schema.StatusPass, p.ms
			}
		}
		out.Results.SessionTest = t
		statuses = append(statuses, t.Status)
	} else {
		a := &schema.SessionsResult{TotalSessions: len(sessions)}
		for _, x := range sessions {
			if p := pings[x.ClientID]; p.ok {
				a.ReachableSessions++
				if p.capable {
					a.ReconnectCapable++
				}
			}
		}
		a.Status = ratioStatus(a.ReachableSessions, a.TotalSessions, 1.0, 0.5)
		out.Results.AllSessions = a
		statuses = append(statuses, a.Status)
	}
	if req.IncludeBufferStatus {
		b := &schema.BufferStatus{PerSession: depths, Status: schema.StatusPass}
		for _, n := range depths {
			b.TotalBufferedRequests += n
			b.SessionsWithBuffers++
			if n >= 80 {
				b.Status = schema.StatusPartial
			}
		}
		if b.TotalBufferedRequests > 100 {
			b.Status = schema.StatusPartial
		}
		out.Results.BufferStatus = b
		statuses = append(statuses, b.Status)
	}
	if req.IncludeReconnectionStats {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		outcomes, err := s.reconnections(hctx)
		cancel()
		if err != nil {
			return nil, schema.Errorf(schema.CodeInternal, "reading the reconnection history: %v", err)
		}
		r := &schema.ReconnectionStats{}
		secs := sumReconnections(r, outcomes, st.Reconnection)
		if r.SuccessfulReconnections > 0 {
			r.AverageReconnectionTime = math.Round(secs/float64(r.SuccessfulReconnections)*1e6) / 1e6
		}
		total := r.SuccessfulReconnections + r.FailedReconnections
		r.Status = ratioStatus(r.SuccessfulReconnections, total, 0.99, 0.95)
		out.Results.ReconnectionStats = r
		statuses = append(statuses, r.Status)
	}
	out.OverallStatus = schema.StatusPass
	for _, x := range statuses {
		if x == schema.StatusFail {
			out.OverallStatus = schema.StatusFail
			break
		}
		if x == schema.StatusPartial {
			out.OverallStatus = schema.StatusPartial
		}
	}
	return out, nil
}

// ratioStatus: pass at or above pass, partial at or above partial, else
// fail; nothing to measure passes.
func ratioStatus(ok, total int, pass, partial float64) string {
	if total == 0 {
		return schema.StatusPass
	}
	r := float64(ok) / float64(total)
	switch {
	case r >= pass:
		return schema.StatusPass
	case r >= partial:
		return schema.StatusPartial
	}
	return schema.StatusFail
}

type pingResult struct {
	ok, capable bool
	ms          float64
}

// pingClients asks each session's client to answer within 1 s.
func (s *Supervisor) pingClients(ctx context.Context, sessions []schema.Session) map[string]pingResult {
	out := make(map[string]pingResult, len(sessions))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, x := range sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func(id string) {
			defer wg.Done()
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			t0 := time.Now()
			var pong struct {
				RidesRestarts bool `json:"rides_restarts"`
			}
			err := s.conn.RequestJSON(pctx, schema.ClientPingSubject(id), map[string]string{"node_id": s.cfg.NodeID}, nil, &pong)
			mu.Lock()
			out[id] = pingResult{ok: err == nil, capable: err == nil && pong.RidesRestarts, ms: float64(time.Since(t0).Microseconds()) / 1000}
			mu.Unlock()
		}(x.ClientID)
	}
	wg.Wait()
	return out
}

func (s *Supervisor) handleBackup(ctx context.Context, data []byte, hdr nats.Header) (any, error) {
	var req schema.BackupRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	p, ok := s.currentWorker()
	if !ok {
		return nil, schema.Errorf(schema.CodeSystemNotReady, "worker not serving; try again after the restart")
	}
	var info schema.SnapshotInfo
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := p.ipc.Call(cctx, ipcSnapshot, map[string]string{"Trigger": "manual"}, &info)
	s.audit(schema.OpStateBackup, hdr, req, err)
	if err != nil {
		return nil, schema.AsError(err)
	}
	info.Type, info.Index = schema.TypeSnapshotInfo, 1
	return &info, nil
}

func (s *Supervisor) handleBackups(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	var req schema.BackupsRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	list, err := s.bs.ListSnapshots(ctx, s.cfg.NodeID)
	if err != nil {
		return nil, err
	}
	if list == nil {
		list = []schema.SnapshotInfo{}
	}
	return &schema.BackupList{Type: schema.TypeBackupList, NodeID: s.cfg.NodeID, Backups: list}, nil
}

func (s *Supervisor) handleRestore(ctx context.Context, data []byte, hdr nats.Header) (any, error) {
	req := schema.DefaultRestoreRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	res, err := s.RestoreBackup(ctx, req)
	s.audit(schema.OpStateRestore, hdr, req, err)
	return res, err
}

// RestoreBackup rolls the node back to a retained snapshot: the current
// state is archived first (a new snapshot), then a graceful restart brings
// up a worker on the chosen snapshot, ignoring the journal after it.
func (s *Supervisor) RestoreBackup(ctx context.Context, req schema.RestoreRequest) (*schema.StateRestore, error) {
	list, err := s.bs.ListSnapshots(ctx, s.cfg.NodeID)
	if err != nil {
		return nil, err
	}
	var target *schema.SnapshotInfo
	for i := range list {
		if list[i].SnapshotID == req.Backup || strconv.Itoa(list[i].Index) == req.Backup {
			target = &list[i]
			break
		}
	}
	if target == nil {
		return nil, schema.Errorf(schema.CodeNotFound, "no backup %q for node %s (see state.backups)", req.Backup, s.cfg.NodeID).WithDetail("field", "backup")
	}
	p, ok := s.currentWorker()
	if !ok {
		return nil, schema.Errorf(schema.CodeSystemNotReady, "worker not serving; try again after the restart")
	}
	var diff schema.DiscardReport
	if err := p.ipc.Call(ctx, ipcDiff, map[string]string{"SnapshotID": target.SnapshotID}, &diff); err != nil {
		return nil, schema.AsError(err)
	}
	rr := schema.DefaultRestartRequest()
	rr.Timeout, rr.Reason = req.Timeout, schema.ReasonManualRequest
	op, err := s.begin(rr, 0, target.SnapshotID, "archive")
	if err != nil {
		return nil, err
	}
	select {
	case <-op.done:
	case <-ctx.Done():
		return nil, schema.Errorf(schema.CodeTimeoutExceeded, "stopped waiting; restore %s goes on", op.res.RestartID)
	}
	out := &schema.StateRestore{Type: schema.TypeStateRestore, NodeID: s.cfg.NodeID, RestoredTo: *target,
		Discarded: diff, Restart: op.res}
	if op.archived != nil {
		out.ArchivedAs = *op.archived
		if after, err := s.bs.ListSnapshots(ctx, s.cfg.NodeID); err == nil {
			for _, b := range after {
				if b.SnapshotID == out.ArchivedAs.SnapshotID {
					out.ArchivedAs.Index = b.Index
				}
			}
		}
	}
	// Accepted and then failed: the report still says what happened.
	return out, nil
}

func (s *Supervisor) handleReply(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	var req schema.ReplyRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	p, ok := s.currentWorker()
	if !ok {
		return nil, schema.Errorf(schema.CodeSystemNotReady, "worker not serving; the reply is kept and will be readable after the restart")
	}
	var raw json.RawMessage
	if err := p.ipc.Call(ctx, ipcReply, map[string]string{"RequestID": req.RequestID}, &raw); err != nil {
		return nil, schema.AsError(err)
	}
	return raw, nil
}

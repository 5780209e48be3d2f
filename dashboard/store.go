package dashboard

import (
	"maps"
	"sync"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// store is the dashboard's picture of the fleet. Every visible change gets
// a new version number; the pusher sends what changed since the version it
// last sent, so a burst of heartbeats and events becomes one update.
type store struct {
	mu      sync.Mutex
	ver     uint64
	changed chan struct{} // a change since the pusher last looked (cap 1)

	nodes    map[string]*nodeView
	removed  map[string]uint64 // node id -> version of its removal, until pushed
	orderVer uint64            // a node came or went

	rolls    map[string]*rollView
	rollsVer uint64

	alerts    []alertView // newest first
	alertsVer uint64

	report    *report
	history   []restart
	reportErr string
	reportVer uint64

	health       *schema.ClusterHealth
	coordErr     string
	coordErrFrom time.Time
	summaryVer   uint64

	keepAlerts int
	keepEnded  time.Duration
}

func newStore(keepAlerts int, keepEnded time.Duration) *store {
	return &store{changed: make(chan struct{}, 1), nodes: map[string]*nodeView{}, removed: map[string]uint64{},
		rolls: map[string]*rollView{}, keepAlerts: keepAlerts, keepEnded: keepEnded}
}

// bump takes the next version and tells the pusher. Called with mu held.
func (s *store) bump() uint64 {
	s.ver++
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return s.ver
}

// touch records n's change if it renders differently from old. The summary
// counts nodes, and an active roll shows its nodes' phases, so both follow.
func (s *store) touch(n *nodeView, old nodeView) {
	if n.same(old) && n.ver != 0 {
		return
	}
	v := s.bump()
	n.ver, s.summaryVer = v, v
	for _, r := range s.rolls {
		if r.Active() && containsStr(r.Status.Current, n.ID) {
			s.rollsVer = v
		}
	}
}

func containsStr(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// node returns the row of id, made if new (a new row changes the order).
func (s *store) node(id string) *nodeView {
	n, ok := s.nodes[id]
	if !ok {
		n = &nodeView{ID: id}
		s.nodes[id] = n
		delete(s.removed, id)
		s.orderVer = s.bump()
	}
	return n
}

// forgetAfter: a node the coordinator no longer lists stays on the page
// while it still heartbeats, and goes when it has been silent this long.
const forgetAfter = 10 * time.Second

// applyNodes takes the coordinator's list. Fields that come from
// heartbeats are taken only if the coordinator's heartbeat is not older
// than the live data this row already has.
func (s *store) applyNodes(list []schema.ClusterNode, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(list))
	for _, cn := range list {
		seen[cn.NodeID] = true
		n := s.node(cn.NodeID)
		old := *n
		if !n.listed || n.Group != cn.Group || n.Priority != cn.Priority {
			s.orderVer = s.bump()
		}
		n.listed = true
		n.Group, n.Priority, n.Version = cn.Group, cn.Priority, cn.Version
		n.Answering, n.Failed, n.Quarantined, n.Degraded, n.EscalationLevel = cn.Answering, cn.Failed, cn.Quarantined, cn.Degraded, cn.EscalationLevel
		if cn.LastHeartbeat != nil && !cn.LastHeartbeat.Before(n.live) || n.live.IsZero() {
			n.Phase, n.Healthy, n.WorkerPID = string(cn.Phase), cn.Healthy, cn.WorkerPID
			n.ActiveConnections, n.BufferedRequests = cn.ActiveConnections, cn.BufferedRequests
			if cn.StartedAt != nil {
				n.StartedAt = cn.StartedAt
			}
		}
		if cn.LastHeartbeat != nil && cn.LastHeartbeat.After(n.lastHeartbeat) {
			n.lastHeartbeat = *cn.LastHeartbeat
		}
		n.LastRestart = later(n.LastRestart, cn.LastRestart)
		n.Restarts24h = max(n.histCount, cn.RestartCount24h, n.Restarts24h)
		s.touch(n, old)
	}
	for id, n := range s.nodes {
		if !seen[id] && now.Sub(n.lastHeartbeat) > forgetAfter {
			delete(s.nodes, id)
			v := s.bump()
			s.removed[id], s.orderVer, s.summaryVer = v, v, v
		} else if !seen[id] && n.listed {
			old := *n
			n.listed = false
			s.touch(n, old)
		}
	}
}

// applyHeartbeat takes a node's heartbeat (a node the coordinator does not
// list yet shows from its first one).
func (s *store) applyHeartbeat(hb schema.Heartbeat, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(hb.NodeID)
	old := *n
	if n.Group != hb.Group || n.Priority != hb.Priority {
		s.orderVer = s.bump()
	}
	n.Group, n.Priority, n.Version = hb.Group, hb.Priority, hb.Version
	n.Phase, n.Healthy, n.WorkerPID = string(hb.Phase), hb.Healthy, hb.WorkerPID
	n.ActiveConnections, n.BufferedRequests = hb.ActiveConnections, hb.BufferedRequests
	if hb.WorkerStartedAt != nil {
		n.StartedAt = hb.WorkerStartedAt
	}
	if !n.listed {
		n.Answering = true
	}
	n.lastHeartbeat, n.live = now, now
	s.touch(n, old)
}

// applyPhase takes a restart phase event.
func (s *store) applyPhase(ev schema.PhaseEvent, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[ev.NodeID]
	if !ok {
		return
	}
	old := *n
	n.Phase, n.live = string(ev.Phase), now
	s.touch(n, old)
}

// applyResult takes a restart's result: the new worker's pid, the last
// restart, one more restart today.
func (s *store) applyResult(res schema.RestartResult, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[res.NodeID]
	if !ok {
		return
	}
	old := *n
	done := res.CompletedAt
	if done.IsZero() {
		done = now
	}
	if n.LastRestart == nil || done.After(*n.LastRestart) {
		n.LastRestart = &done
		n.Restarts24h++
	}
	if res.Success && res.NewPID > 0 {
		n.WorkerPID, n.StartedAt = res.NewPID, &done
	}
	if res.Phase != "" {
		n.Phase = string(res.Phase)
	}
	n.live = now
	s.touch(n, old)
}

// applyHistory takes cluster.history and the report.
func (s *store) applyHistory(hist []restart, rep *report, errText string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errText == "" {
		s.history, s.report = hist, rep
		counts := map[string]int{}
		lasts := map[string]time.Time{}
		for _, r := range hist {
			if now.Sub(r.CompletedAt) <= 24*time.Hour {
				counts[r.NodeID]++
			}
			if r.CompletedAt.After(lasts[r.NodeID]) {
				lasts[r.NodeID] = r.CompletedAt
			}
		}
		for id, n := range s.nodes {
			old := *n
			n.histCount = counts[id]
			n.Restarts24h = n.histCount
			if t, ok := lasts[id]; ok {
				n.histLast = &t
				n.LastRestart = later(n.LastRestart, n.histLast)
			}
			s.touch(n, old)
		}
	}
	s.reportErr = errText
	s.reportVer = s.bump()
}

// applyHealth takes cluster.health, or the error that stood in its way.
func (s *store) applyHealth(h *schema.ClusterHealth, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.coordErr == "" {
			s.coordErrFrom = now
		}
		if s.coordErr != err.Error() {
			s.coordErr = err.Error()
			s.summaryVer = s.bump()
		}
		return
	}
	changed := s.coordErr != "" || s.health == nil || s.health.Leader != h.Leader ||
		s.health.CircuitBreaker != h.CircuitBreaker || s.health.ActiveRolls != h.ActiveRolls || s.health.Healthy != h.Healthy
	s.health, s.coordErr = h, ""
	if changed {
		s.summaryVer = s.bump()
	}
}

// noteRoll records that roll id had an event; a roll first heard of here
// shows as pending until its status is read.
func (s *store) noteRoll(id string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rolls[id]
	if !ok {
		r = &rollView{Status: schema.RollStatus{RollID: id}}
		s.rolls[id] = r
		s.rollsVer = s.bump()
	}
	if at.After(r.LastEvent) {
		r.LastEvent = at
	}
}

// applyRoll takes a roll's status (nil: the coordinators do not know it).
func (s *store) applyRoll(id string, st *schema.RollStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rolls[id]
	if st == nil {
		if ok {
			delete(s.rolls, id)
			s.rollsVer = s.bump()
		}
		return
	}
	if !ok {
		r = &rollView{LastEvent: time.Now()}
		s.rolls[id] = r
	}
	if ok && rollSame(r.Status, *st) {
		return
	}
	r.Status = *st
	s.rollsVer = s.bump()
}

func rollSame(a, b schema.RollStatus) bool {
	return a.State == b.State && a.Done == b.Done && a.Total == b.Total && a.Message == b.Message &&
		slicesEqual(a.Current, b.Current) && slicesEqual(a.Failed, b.Failed) && sameTime(a.ETA, b.ETA)
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// rollsToRead are the rolls whose status may still change, and the ended
// ones kept past keepEnded, which go.
func (s *store) rollsToRead(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, r := range s.rolls {
		switch {
		case r.Active():
			ids = append(ids, id)
		case now.Sub(r.LastEvent) > s.keepEnded:
			delete(s.rolls, id)
			s.rollsVer = s.bump()
		}
	}
	return ids
}

// addAlert keeps an alert (once, by id), newest first.
func (s *store) addAlert(a alertView, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.alerts {
		if b.AlertID == a.AlertID {
			return
		}
	}
	i := 0
	for i < len(s.alerts) && s.alerts[i].Timestamp.After(a.Timestamp) {
		i++
	}
	s.alerts = append(s.alerts[:i], append([]alertView{a}, s.alerts[i:]...)...)
	s.pruneAlerts(now)
	s.alertsVer = s.bump()
}

// alertWindow: an alert older than this no longer shows as firing.
const alertWindow = 24 * time.Hour

func (s *store) pruneAlerts(now time.Time) {
	n := 0
	for _, a := range s.alerts {
		if now.Sub(a.Timestamp) <= alertWindow && n < s.keepAlerts {
			s.alerts[n] = a
			n++
		}
	}
	if n != len(s.alerts) {
		s.alerts = s.alerts[:n]
		s.alertsVer = s.bump()
	}
}

// snapshot is a copy of what changed after version since (everything for
// 0), to render without holding the lock.
type snapshot struct {
	Ver      uint64
	Full     bool
	Rows     []nodeView // changed rows
	Order    []string   // every row's id, in order, when a node came or went
	Removed  []string
	Summary  *summaryView
	Rolls    []rollView
	RollsOn  bool
	Alerts   []alertView
	AlertsOn bool
	Report   *reportView
}

func (s *store) since(since uint64, now time.Time) snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := snapshot{Ver: s.ver, Full: since == 0}
	sorted := sortedNodes(s.nodes)
	for _, n := range sorted {
		if n.ver > since {
			sn.Rows = append(sn.Rows, *n)
		}
	}
	if s.orderVer > since {
		for _, n := range sorted {
			sn.Order = append(sn.Order, n.ID)
		}
	}
	if !sn.Full {
		for id, v := range s.removed {
			if v > since {
				sn.Removed = append(sn.Removed, id)
			}
		}
	}
	if s.summaryVer > since || sn.Full {
		sn.Summary = s.summaryLocked(sorted, now)
	}
	if s.rollsVer > since || sn.Full {
		sn.RollsOn = true
		for _, r := range s.rolls {
			sn.Rolls = append(sn.Rolls, *r)
		}
		sortRolls(sn.Rolls)
		phases := map[string]string{}
		for _, r := range sn.Rolls {
			for _, id := range r.Status.Current {
				if n, ok := s.nodes[id]; ok {
					phases[id] = n.Phase
				}
			}
		}
		for i := range sn.Rolls {
			for _, id := range sn.Rolls[i].Status.Current {
				sn.Rolls[i].Current = append(sn.Rolls[i].Current, nodePhase{ID: id, Phase: phases[id]})
			}
		}
	}
	if s.alertsVer > since || sn.Full {
		sn.AlertsOn = true
		sn.Alerts = append([]alertView(nil), s.alerts...)
	}
	if s.reportVer > since || sn.Full {
		sn.Report = &reportView{Report: s.report, Err: s.reportErr, History: s.history}
	}
	return sn
}

// forgetRemoved drops removals that have been pushed.
func (s *store) forgetRemoved(upTo uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.DeleteFunc(s.removed, func(_ string, v uint64) bool { return v <= upTo })
}

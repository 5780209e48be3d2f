package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// action is a handler that only the leader may run.
type action func(ctx context.Context, data []byte, subject string, term uint64) (any, error)

func (c *Coordinator) actions() map[string]action {
	return map[string]action{
		schema.OpRollStart:       c.doRollStart,
		schema.OpRollPause:       c.doRollState(schema.RollPaused),
		schema.OpRollResume:      c.doRollState(schema.RollRunning),
		schema.OpRollAbort:       c.doRollState(schema.RollAborted),
		schema.OpBreakerReset:    c.doBreakerReset,
		"node.release":           c.doNodeOp("release"),
		"node.quarantine":        c.doNodeOp("quarantine"),
		"node.forget":            c.doNodeOp("forget"),
		schema.OpAlerts:          c.doAlerts,
		schema.OpAlertsSilence:   c.doSilence,
		schema.OpAlertsUnsilence: c.doUnsilence,
		schema.OpAlertsTest:      c.doAlertsTest,
		schema.OpAlertsConfigSet: c.doAlertsConfigSet,
		schema.OpAlertsConfigGet: c.doAlertsConfigGet,
	}
}

func (c *Coordinator) serviceConfig() bus.ServiceConfig {
	ep := func(name, subj string, h bus.Handler) bus.Endpoint {
		return bus.Endpoint{Name: name, Subject: subj, Handler: h}
	}
	acts := c.actions()
	leaderOnly := func(op string) bus.Handler {
		return func(ctx context.Context, data []byte, _ nats.Header) (any, error) {
			return c.toLeader(ctx, op, data, bus.Subject(ctx))
		}
	}
	_ = acts
	return bus.ServiceConfig{
		Name: schema.ServiceCoordinator, Version: semver(c.cfg.Version), Description: "restartcoord coordinator " + c.cfg.ID,
		Metadata: map[string]string{"coordinator_id": c.cfg.ID}, Shared: true,
		// One coordinator takes each request (micro's queue group); a
		// follower forwards actions to the leader.
		Endpoints: []bus.Endpoint{
			ep("health", schema.ClusterSubject(schema.OpClusterHealth), c.handleHealth),
			ep("nodes", schema.ClusterSubject(schema.OpClusterNodes), c.handleNodes),
			ep("roll_plan", schema.ClusterSubject(schema.OpRollPlan), c.handleRollPlan),
			ep("roll_status", schema.ClusterSubject(schema.OpRollStatus), c.handleRollStatus),
			ep("history", schema.ClusterSubject(schema.OpClusterHistory), c.handleHistory),
			ep("report", schema.ClusterSubject(schema.OpClusterReport), c.handleReport),
			ep("roll_start", schema.ClusterSubject(schema.OpRollStart), leaderOnly(schema.OpRollStart)),
			ep("roll_pause", schema.ClusterSubject(schema.OpRollPause), leaderOnly(schema.OpRollPause)),
			ep("roll_resume", schema.ClusterSubject(schema.OpRollResume), leaderOnly(schema.OpRollResume)),
			ep("roll_abort", schema.ClusterSubject(schema.OpRollAbort), leaderOnly(schema.OpRollAbort)),
			ep("breaker_reset", schema.ClusterSubject(schema.OpBreakerReset), leaderOnly(schema.OpBreakerReset)),
			ep("node_release", schema.ClusterNodeSubject("*", "release"), leaderOnly("node.release")),
			ep("node_quarantine", schema.ClusterNodeSubject("*", "quarantine"), leaderOnly("node.quarantine")),
			ep("node_forget", schema.ClusterNodeSubject("*", "forget"), leaderOnly("node.forget")),
			ep("alerts", schema.ClusterSubject(schema.OpAlerts), leaderOnly(schema.OpAlerts)),
			ep("alerts_silence", schema.ClusterSubject(schema.OpAlertsSilence), leaderOnly(schema.OpAlertsSilence)),
			ep("alerts_unsilence", schema.ClusterSubject(schema.OpAlertsUnsilence), leaderOnly(schema.OpAlertsUnsilence)),
			ep("alerts_test", schema.ClusterSubject(schema.OpAlertsTest), leaderOnly(schema.OpAlertsTest)),
			ep("alerts_config_set", schema.ClusterSubject(schema.OpAlertsConfigSet), leaderOnly(schema.OpAlertsConfigSet)),
			ep("alerts_config_get", schema.ClusterSubject(schema.OpAlertsConfigGet), leaderOnly(schema.OpAlertsConfigGet)),
		},
	}
}

// servePrivate answers actions forwarded to this coordinator by name.
func (c *Coordinator) servePrivate() (*bus.Service, error) {
	var eps []bus.Endpoint
	for op := range c.actions() {
		eps = append(eps, bus.Endpoint{Name: "fwd_" + strings.ReplaceAll(op, ".", "_"), Subject: schema.CoordinatorSubject(c.cfg.ID, op),
			Handler: func(ctx context.Context, data []byte, hdr nats.Header) (any, error) {
				ok, term := c.elect.isLeader()
				if !ok {
					return nil, c.notLeader(ctx)
				}
				return c.actions()[op](ctx, data, hdr.Get("Orch-Original-Subject"), term)
			}})
	}
	return c.conn.Serve(bus.ServiceConfig{Name: "orch-coordinator-direct", Version: semver(c.cfg.Version),
		Description: "actions forwarded to coordinator " + c.cfg.ID, Endpoints: eps})
}

// toLeader runs an action here if this coordinator leads, else forwards it
// to the leader. With no leader (an election under way) or a leader that
// does not answer (the one named in the lease just died), the action is
// held and tried again until a leader answers, for up to cfg.LeaderWait,
// then refused with NOT_LEADER: a caller is not told "no leader" for an
// election it could not see. A roll start gets its roll_id here, before the
// first try, so that one forwarded twice (its first leader died after
// storing it) makes one roll.
func (c *Coordinator) toLeader(ctx context.Context, op string, data []byte, subject string) (any, error) {
	if op == schema.OpRollStart {
		var err error
		if data, err = withRollID(data); err != nil {
			return nil, err // invalid: no leader would take it either
		}
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.LeaderWait)
	defer cancel()
	for {
		out, err, again := c.tryLeader(wctx, op, data, subject)
		if !again {
			return out, err
		}
		select {
		case <-wctx.Done():
			return nil, err
		case <-time.After(leaderPoll):
		}
	}
}

// leaderPoll is how often a held action looks for a leader again;
// forwardTry bounds one forward, so a leader that died without a word is
// given up on in time to find the next (a live one answers in milliseconds,
// a roll start within its state reads; a start tried again is answered by
// its roll_id).
const (
	leaderPoll = 200 * time.Millisecond
	forwardTry = 2 * time.Second
)

// tryLeader makes one try of toLeader; again: no leader answered, and the
// error is NOT_LEADER.
func (c *Coordinator) tryLeader(ctx context.Context, op string, data []byte, subject string) (out any, err error, again bool) {
	if ok, term := c.elect.isLeader(); ok {
		out, err = c.actions()[op](ctx, data, subject, term)
		return out, err, false
	}
	leader := c.elect.leader(ctx)
	if leader == "" || leader == c.cfg.ID {
		return nil, c.notLeader(ctx), true
	}
	hdr := nats.Header{}
	hdr.Set("Orch-Original-Subject", subject)
	fctx, cancel := context.WithTimeout(ctx, forwardTry)
	defer cancel()
	raw, err := c.conn.Request(fctx, schema.CoordinatorSubject(leader, op), data, hdr)
	var se *schema.Error
	switch {
	case err == nil:
		return json.RawMessage(raw), nil, false
	case errors.As(err, &se) && se.Code == schema.CodeNotLeader:
		return nil, se, true // it stepped down: the lease names it until it expires
	case errors.As(err, &se):
		return nil, se, false
	}
	return nil, schema.Errorf(schema.CodeNotLeader, "leader %s did not answer: %v", leader, err).WithDetail("leader", leader), true
}

// withRollID gives a roll start without a roll_id one. The request is
// decoded as the leader will (defaults, strict, validated) and sent on as
// decoded, so the leader sees the same request.
func withRollID(data []byte) ([]byte, error) {
	req := schema.DefaultRollRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	if req.RollID != "" {
		return data, nil
	}
	req.RollID = newRollID()
	return json.Marshal(req)
}

func (c *Coordinator) notLeader(ctx context.Context) error {
	leader := c.elect.leader(ctx)
	return schema.Errorf(schema.CodeNotLeader, "coordinator %s is not the leader (leader: %q)", c.cfg.ID, leader).WithDetail("leader", leader)
}

func semver(v string) string {
	if v == "" || strings.Count(v, ".") < 2 || !strings.ContainsAny(v[:1], "0123456789") {
		return "0.1.0"
	}
	return v
}

// --- reads -------------------------------------------------------------------

// recentRestarts reads the restarts of the last 24 hours, for the
// dashboard's figures. An answer is quick: while JetStream does not answer
// (an election) they are left out (nil) rather than the answer held up or
// a part of them shown as the whole.
func (c *Coordinator) recentRestarts(ctx context.Context) []schema.RestartResult {
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	hist, err := c.history(hctx, historyFilter{since: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		return nil
	}
	return hist
}

func (c *Coordinator) clusterNodes(ctx context.Context, group string) []schema.ClusterNode {
	return c.clusterNodesWith(ctx, group, c.recentRestarts(ctx))
}

// clusterNodesWith lists the nodes, their restart figures from hist (the
// last 24 hours of restarts, oldest first).
func (c *Coordinator) clusterNodesWith(ctx context.Context, group string, hist []schema.RestartResult) []schema.ClusterNode {
	now := time.Now()
	type restarts struct {
		last  time.Time
		count int
	}
	byNode := map[string]*restarts{}
	for _, r := range hist {
		x := byNode[r.NodeID]
		if x == nil {
			x = &restarts{}
			byNode[r.NodeID] = x
		}
		x.count++
		if r.CompletedAt.After(x.last) {
			x.last = r.CompletedAt
		}
	}
	var out []schema.ClusterNode
	for _, v := range c.mem.snapshot() {
		if group != "" && v.Info.Group != group {
			continue
		}
		m := v.member(c.answerWindow(), now)
		n := schema.ClusterNode{NodeID: v.Info.NodeID, Group: v.Info.Group, Priority: v.Info.Priority,
			Phase: v.Heartbeat.Phase, Healthy: m.Healthy, Answering: m.Answering, Failed: v.Failed, Version: v.Info.Version,
			WorkerPID: v.Heartbeat.WorkerPID}
		if !v.LastHeartbeat.IsZero() {
			t := v.LastHeartbeat.UTC()
			n.LastHeartbeat = &t
			// What the node last said of its clients and buffer; a node
			// not answering has no current figure, so none is shown.
			if m.Answering {
				n.ActiveConnections, n.BufferedRequests = v.Heartbeat.ActiveConnections, v.Heartbeat.BufferedRequests
				n.StartedAt = v.Heartbeat.WorkerStartedAt
			}
		}
		if x := byNode[n.NodeID]; x != nil {
			t := x.last.UTC()
			n.LastRestart, n.RestartCount24h = &t, x.count
		}
		if ns, _, err := c.state.getNode(ctx, n.NodeID); err == nil {
			n.EscalationLevel, n.Degraded, n.Quarantined, n.Failures = ns.Level, ns.Degraded, ns.Quarantined, ns.Failures
		}
		out = append(out, n)
	}
	if out == nil {
		out = []schema.ClusterNode{}
	}
	return out
}

func (c *Coordinator) handleNodes(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	var req schema.NodesRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	return &schema.NodeList{Type: schema.TypeNodeList, Nodes: c.clusterNodes(ctx, req.Group)}, nil
}

func (c *Coordinator) handleHealth(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	var req schema.EmptyRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	hist := c.recentRestarts(ctx)
	nodes := c.clusterNodesWith(ctx, "", hist)
	h := &schema.ClusterHealth{Type: schema.TypeClusterHealth, Timestamp: time.Now().UTC(), Leader: c.elect.leader(ctx),
		NodesTotal: len(nodes), NodesByPhase: map[string]int{}, UptimeSeconds: schema.Secs(time.Since(c.started))}
	if ok, term := c.elect.isLeader(); ok {
		h.Term = term
	}
	for _, n := range nodes {
		if n.Healthy {
			h.NodesHealthy++
		}
		h.ActiveConnections += n.ActiveConnections
		phase := string(n.Phase)
		if !n.Answering {
			phase = "unreachable"
		}
		h.NodesByPhase[phase]++
	}
	if rolls, err := c.state.rolls(ctx); err == nil {
		for _, r := range rolls {
			if r.State == schema.RollRunning || r.State == schema.RollPaused {
				h.ActiveRolls++
			}
		}
	}
	if b, err := c.state.breaker(ctx); err == nil {
		h.CircuitBreaker = b
	}
	h.RestartCount24h = len(hist)
	if len(hist) > 0 {
		t := hist[len(hist)-1].CompletedAt
		h.LastRestart = &t
	}
	h.Healthy = h.NodesTotal > 0 && h.NodesHealthy == h.NodesTotal && !h.CircuitBreaker.Open
	return h, nil
}

func (c *Coordinator) handleRollPlan(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	req := schema.DefaultRollRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	plan, blocked, err := c.planRoll(ctx, req)
	if err != nil {
		return nil, err
	}
	if blocked == nil {
		blocked = []string{}
	}
	return &schema.RollPlan{Type: schema.TypeRollPlan, Plan: schema.PlanWaves{Waves: plan.Waves}, BlockedBy: blocked, Skipped: plan.Skipped}, nil
}

func (c *Coordinator) handleRollStatus(ctx context.Context, data []byte, _ nats.Header) (any, error) {
	var req schema.RollIDRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	r, err := c.state.getRoll(ctx, req.RollID)
	if err != nil {
		return nil, err
	}
	return r.status(), nil
}

// --- actions -------------------------------------------------------------------

func (c *Coordinator) doRollStart(ctx context.Context, data []byte, _ string, term uint64) (any, error) {
	req := schema.DefaultRollRequest()
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	// A start repeated with the same roll_id (its answer lost, or
	// forwarded again to the next leader) returns the roll it made.
	if st, ok := c.existingRoll(ctx, req.RollID); ok {
		return st, nil
	}
	if open, reason := c.brk.Open(); open {
		return nil, schema.Errorf(schema.CodeSystemNotReady, "circuit breaker open: %s", reason).WithDetail("blocking_issues", []string{reason})
	}
	r, err := c.startRoll(ctx, req, term)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// A concurrent start with this id made it first.
		if st, ok := c.existingRoll(ctx, req.RollID); ok {
			return st, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return r.status(), nil
}

// existingRoll is the status of roll id, if there is one.
func (c *Coordinator) existingRoll(ctx context.Context, id string) (*schema.RollStatus, bool) {
	if id == "" {
		return nil, false
	}
	r, err := c.state.getRoll(ctx, id)
	if err != nil {
		return nil, false
	}
	return r.status(), true
}

func (c *Coordinator) doRollState(to string) action {
	return func(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
		var req schema.RollIDRequest
		if err := schema.Decode(data, &req); err != nil {
			return nil, err
		}
		c.rollMu.Lock()
		defer c.rollMu.Unlock()
		r, err := c.state.getRoll(ctx, req.RollID)
		if err != nil {
			return nil, err
		}
		if r.State == to && to == schema.RollAborted {
			return r.status(), nil // an abort forwarded twice (toLeader) is answered, not refused
		}
		switch r.State {
		case schema.RollCompleted, schema.RollFailed, schema.RollAborted:
			return nil, schema.Invalid("roll_id", "roll %s is %s", r.ID, r.State)
		}
		switch to {
		case schema.RollRunning:
			r.resume() // the failed nodes are retried; the pause is forgotten
		case schema.RollPaused:
			// An operator's pause replaces any other: it is never resumed
			// automatically, even if its failed node recovers.
			r.pause(schema.PausedOperator, "", "", time.Now())
		default:
			r.unpause()
			r.State, r.Message = to, ""
		}
		if err := c.state.putRoll(ctx, r); err != nil {
			return nil, err
		}
		kind := map[string]string{schema.RollPaused: "paused", schema.RollRunning: "resumed", schema.RollAborted: "aborted"}[to]
		var fields map[string]any
		switch to {
		case schema.RollRunning:
			fields = map[string]any{"automatic": false}
		case schema.RollPaused:
			fields = map[string]any{"reason": schema.PausedOperator}
		}
		c.event(r.ID, kind, fields)
		return r.status(), nil
	}
}

func (c *Coordinator) doBreakerReset(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.EmptyRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	c.brkMu.Lock()
	defer c.brkMu.Unlock()
	if c.brk.Reset() {
		c.alert(schema.SeverityInfo, "circuit_breaker_closed", "", "circuit breaker reset by an operator", nil)
	}
	return c.brk.State(), c.saveBreaker(ctx)
}

func (c *Coordinator) doNodeOp(op string) action {
	return func(ctx context.Context, data []byte, subject string, _ uint64) (any, error) {
		var req schema.EmptyRequest
		if err := schema.Decode(data, &req); err != nil {
			return nil, err
		}
		parts := strings.Split(subject, ".")
		if len(parts) < 5 || !schema.ValidToken(parts[len(parts)-2]) {
			return nil, schema.Invalid("node_id", "no node id in subject %q", subject)
		}
		id := parts[len(parts)-2]
		if _, known := c.mem.get(id); !known && op != "forget" {
			return nil, schema.Errorf(schema.CodeNotFound, "no node %s", id)
		}
		ns, _, err := c.state.getNode(ctx, id)
		if err != nil {
			return nil, err
		}
		switch op {
		case "release":
			ns = NodeState{Reason: "released by an operator"}
		case "quarantine":
			ns.Quarantined, ns.Level, ns.Degraded, ns.Reason = true, LevelEngineering, true, "quarantined by an operator"
		case "forget":
			kv, err := c.bs.JetStream().KeyValue(ctx, schema.BucketNodes)
			if err != nil {
				return nil, err
			}
			_ = kv.Delete(ctx, id)
			c.mem.forget(id)
			if err := c.state.deleteNode(ctx, id); err != nil {
				return nil, err
			}
			return &schema.ClusterNode{Type: schema.TypeClusterNode, NodeID: id}, nil
		}
		if err := c.state.putNode(ctx, id, ns); err != nil {
			return nil, err
		}
		for _, n := range c.clusterNodes(ctx, "") {
			if n.NodeID == id {
				n.Type = schema.TypeClusterNode
				return &n, nil
			}
		}
		return nil, schema.Errorf(schema.CodeNotFound, "no node %s", id)
	}
}

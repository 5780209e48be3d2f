package dashboard

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

// subscribe follows heartbeats, node and roll events and alerts. Handlers
// only update the store (in memory): the requests a change calls for are
// made by the loops, woken through the kick channels.
func (s *Server) subscribe() (func(), error) {
	var subs []*nats.Subscription
	unsub := func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}
	add := func(subj string, h nats.MsgHandler) error {
		sub, err := s.conn.Subscribe(subj, h)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		return nil
	}
	err := errors.Join(
		add(schema.HeartbeatWildcard, func(m *nats.Msg) {
			var hb schema.Heartbeat
			if json.Unmarshal(m.Data, &hb) == nil && schema.ValidToken(hb.NodeID) {
				s.st.applyHeartbeat(hb, time.Now())
			}
		}),
		add(schema.EventsSubjects, s.onEvent),
		add(schema.AlertsSubjects, func(m *nats.Msg) {
			if a, ok := decodeAlert(m.Data); ok {
				s.st.addAlert(a, time.Now())
			}
		}),
	)
	if err != nil {
		unsub()
		return nil, err
	}
	// The subscriptions are in place before the first reads, so nothing
	// that happens during those reads is missed (alerts are kept by id).
	if err := s.conn.Flush(); err != nil {
		unsub()
		return nil, err
	}
	return unsub, nil
}

// onEvent takes orch.v1.evt.node.<id>.<kind> and orch.v1.evt.roll.<id>.<kind>.
func (s *Server) onEvent(m *nats.Msg) {
	tok := strings.Split(m.Subject, ".") // orch v1 evt node|roll <id> <kind>
	if len(tok) != 6 {
		return
	}
	now := time.Now()
	switch tok[3] {
	case "node":
		switch tok[len(tok)-1] {
		case schema.EventPhase:
			var ev schema.PhaseEvent
			if json.Unmarshal(m.Data, &ev) == nil {
				s.st.applyPhase(ev, now)
			}
		case schema.EventRestartResult:
			var res schema.RestartResult
			if json.Unmarshal(m.Data, &res) == nil {
				s.st.applyResult(res, now)
				kick(s.kickNodes)
				kick(s.kickReport)
				kick(s.kickRolls)
			}
		}
	case "roll":
		if schema.ValidToken(tok[4]) {
			s.st.noteRoll(tok[4], now)
			kick(s.kickRolls)
			kick(s.kickNodes) // the header counts the rolls in progress
		}
	}
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func decodeAlert(data []byte) (alertView, bool) {
	var a alertView
	if json.Unmarshal(data, &a) != nil || a.Kind == "" {
		return a, false
	}
	if a.AlertID == "" {
		a.AlertID = a.Kind + "/" + a.NodeID + "/" + a.Timestamp.String()
	}
	return a, true
}

// request asks the coordinators, within RequestTimeout.
func (s *Server) request(ctx context.Context, op string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	return s.conn.RequestJSON(ctx, schema.ClusterSubject(op), body, nil, out)
}

// refreshNodes reads cluster.nodes and cluster.health.
func (s *Server) refreshNodes(ctx context.Context) error {
	var l schema.NodeList
	err := s.request(ctx, schema.OpClusterNodes, schema.NodesRequest{}, &l)
	now := time.Now()
	if err == nil {
		s.st.applyNodes(l.Nodes, now)
		s.mu.Lock()
		s.loaded = true
		s.mu.Unlock()
		var h schema.ClusterHealth
		if herr := s.request(ctx, schema.OpClusterHealth, schema.EmptyRequest{}, &h); herr == nil {
			s.st.applyHealth(&h, nil, now)
			return nil
		}
	}
	if err != nil {
		s.st.applyHealth(nil, err, now)
	}
	return err
}

// loop calls fn every period, and after a kick once settle has passed
// (a burst of events makes one read).
func loop(ctx context.Context, every, settle time.Duration, kicks <-chan struct{}, fn func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kicks:
			select {
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
		}
		fn(ctx)
	}
}

func (s *Server) nodesLoop(ctx context.Context) {
	_ = s.refreshNodes(ctx)
	loop(ctx, s.cfg.NodesEvery, 200*time.Millisecond, s.kickNodes, func(ctx context.Context) { _ = s.refreshNodes(ctx) })
}

// rollsLoop reads the status of the rolls that may still change.
func (s *Server) rollsLoop(ctx context.Context) {
	loop(ctx, s.cfg.RollsEvery, 50*time.Millisecond, s.kickRolls, func(ctx context.Context) {
		for _, id := range s.st.rollsToRead(time.Now()) {
			var st schema.RollStatus
			err := s.request(ctx, schema.OpRollStatus, schema.RollIDRequest{RollID: id}, &st)
			var se *schema.Error
			switch {
			case err == nil:
				s.st.applyRoll(id, &st)
			case errors.As(err, &se) && se.Code == schema.CodeNotFound:
				s.st.applyRoll(id, nil)
			}
		}
	})
}

// reportLoop reads the report and the history behind its chart.
func (s *Server) reportLoop(ctx context.Context) {
	read := func(ctx context.Context) {
		since := time.Now().Add(-s.cfg.ReportWindow).UTC()
		var hist struct {
			Restarts []restart `json:"restarts"`
		}
		err := s.request(ctx, schema.OpClusterHistory, map[string]any{"since": since, "limit": historyLimit}, &hist)
		var rep report
		if err == nil {
			err = s.request(ctx, schema.OpClusterReport, map[string]any{"window": s.cfg.ReportWindow.Seconds()}, &rep)
		}
		if err != nil {
			s.st.applyHistory(nil, nil, err.Error(), time.Now())
			return
		}
		s.st.applyHistory(hist.Restarts, &rep, "", time.Now())
	}
	read(ctx)
	loop(ctx, s.cfg.ReportEvery, 2*time.Second, s.kickReport, read)
}

// historyLimit: the chart shows at most this many restarts (the newest).
const historyLimit = 2000

// loadRecent reads the last day of alerts (ORCH_ALERTS) and of roll events
// (ORCH_EVENTS), so a dashboard started now shows what fired before it and
// the rolls under way. A monitor user may read both streams.
func (s *Server) loadRecent(ctx context.Context) {
	js, err := jetstream.New(s.conn.Conn)
	if err != nil {
		s.log.Warn("no JetStream: recent alerts and rolls not read", "err", err)
		return
	}
	since := time.Now().Add(-alertWindow)
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{schema.AlertsSubjects},
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
	err = bus.ReadAll(rctx, js, schema.StreamAlerts, cfg, func(m jetstream.Msg) error {
		if a, ok := decodeAlert(m.Data()); ok {
			s.st.addAlert(a, time.Now())
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("recent alerts not read", "err", err)
	}
	type rollSeen struct {
		at   time.Time
		kind string
	}
	rolls := map[string]rollSeen{}
	cfg.FilterSubjects = []string{schema.RollEventSubject("*", "*")}
	err = bus.ReadAll(rctx, js, schema.StreamEvents, cfg, func(m jetstream.Msg) error {
		tok := strings.Split(m.Subject(), ".") // orch v1 evt roll <id> <kind>
		if md, err := m.Metadata(); err == nil && len(tok) == 6 && schema.ValidToken(tok[4]) {
			rolls[tok[4]] = rollSeen{md.Timestamp, tok[5]}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("recent rolls not read", "err", err)
	}
	for id, r := range rolls {
		ended := r.kind == "completed" || r.kind == "failed" || r.kind == "aborted"
		if !ended || time.Since(r.at) < s.cfg.KeepEnded {
			s.st.noteRoll(id, r.at)
		}
	}
	if len(rolls) > 0 {
		kick(s.kickRolls)
	}
}

package coordinator

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/alerting"
	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/schema"
)

// The alert operations run on the leader, which delivers (toLeader).

// leading is the delivery state while it leads, or NOT_LEADER-like
// UNAVAILABLE while it is still loading (the first pass of a new term).
func (d *delivery) leading() error {
	if d.st == nil {
		return schema.Errorf(schema.CodeSystemNotReady, "alert delivery is starting on this leader; try again")
	}
	return nil
}

func (c *Coordinator) doAlerts(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.EmptyRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	d := c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.leading(); err != nil {
		return nil, err
	}
	now := time.Now()
	out := schema.AlertsStatus{Type: schema.TypeAlertsStatus, Leader: c.cfg.ID, Source: d.source,
		Receivers: d.receivers(), Firing: []schema.AlertGroup{}, Deliveries: []schema.AlertDelivery{},
		Failures: []schema.AlertDelivery{}, Silences: []schema.Silence{}}
	for _, g := range d.st.Groups {
		if !g.Alert.Firing() {
			continue
		}
		ag := schema.AlertGroup{Fingerprint: g.Fingerprint, Kind: g.Alert.Kind, Severity: g.Alert.Severity,
			Status: schema.AlertStatusFiring, NodeID: g.Alert.NodeID, RollID: g.Alert.RollID, Message: g.Alert.Message,
			Count: g.Count, FirstSeen: g.FirstSeen, LastNotified: g.LastNotified, Receivers: d.eng.Config.ReceiversFor(g.Alert)}
		if s, ok := alerting.Silenced(d.st.Silences, g.Alert, now); ok {
			ag.SilencedBy = s.ID
		}
		out.Firing = append(out.Firing, ag)
	}
	slices.SortFunc(out.Firing, func(a, b schema.AlertGroup) int { return a.FirstSeen.Compare(b.FirstSeen) })
	for _, del := range d.st.Deliveries {
		ad := schema.AlertDelivery{NotificationID: del.Notification.ID, Receiver: del.Receiver,
			Fingerprint: del.Notification.Fingerprint, Status: del.Notification.Status, State: del.Status,
			Attempts: del.Attempts, LastError: del.LastError, CreatedAt: del.CreatedAt, DoneAt: del.DoneAt}
		if del.Status == alerting.DeliveryPending {
			ad.NextAttempt = del.NextAttempt
		}
		out.Deliveries = append(out.Deliveries, ad)
		if del.Status == alerting.DeliveryFailed || del.Status == alerting.DeliveryPending && del.LastError != "" {
			out.Failures = append(out.Failures, ad)
		}
	}
	byTime := func(a, b schema.AlertDelivery) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Receiver, b.Receiver)
	}
	slices.SortFunc(out.Deliveries, byTime)
	slices.SortFunc(out.Failures, byTime)
	for _, s := range d.st.Silences {
		if now.Before(s.Until) {
			out.Silences = append(out.Silences, wireSilence(s))
		}
	}
	return out, nil
}

// receivers lists the configured receivers (d.mu held).
func (d *delivery) receivers() []schema.AlertReceiver {
	out := []schema.AlertReceiver{}
	for _, r := range d.eng.Config.Receivers {
		ar := schema.AlertReceiver{Name: r.Name, Type: r.Type, Ready: d.notifiers[r.Name] != nil, Error: d.problems[r.Name]}
		out = append(out, ar)
	}
	return out
}

func wireSilence(s alerting.Silence) schema.Silence {
	return schema.Silence{Type: schema.TypeSilence, SilenceID: s.ID, Kind: s.Kind, NodeID: s.NodeID, Until: s.Until,
		Reason: s.Reason, CreatedBy: s.CreatedBy, CreatedAt: s.CreatedAt}
}

func (c *Coordinator) doSilence(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.SilenceRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	s := alerting.Silence{ID: "sil-" + uuid.NewString()[:8], Kind: req.Kind, NodeID: req.NodeID,
		Until: now.Add(time.Duration(req.Duration * float64(time.Second))), Reason: req.Reason, CreatedBy: "anonymous", CreatedAt: now}
	if err := s.Validate(now); err != nil {
		return nil, schema.Invalid("", "%v", err)
	}
	d := c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.leading(); err != nil {
		return nil, err
	}
	d.st.Silences = append(d.st.Silences, s)
	if err := d.save(ctx); err != nil {
		d.st.Silences = d.st.Silences[:len(d.st.Silences)-1]
		return nil, schema.Errorf(schema.CodeInternal, "silence not stored: %v", err)
	}
	c.auditOp(schema.OpAlertsSilence, req, nil)
	return wireSilence(s), nil
}

func (c *Coordinator) doUnsilence(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.UnsilenceRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	d := c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.leading(); err != nil {
		return nil, err
	}
	i := slices.IndexFunc(d.st.Silences, func(s alerting.Silence) bool { return s.ID == req.SilenceID })
	if i < 0 {
		return nil, schema.Errorf(schema.CodeNotFound, "no silence %s (see `restartcoord alerts`)", req.SilenceID)
	}
	s := d.st.Silences[i]
	d.st.Silences = slices.Delete(d.st.Silences, i, i+1)
	if err := d.save(ctx); err != nil {
		d.st.Silences = slices.Insert(d.st.Silences, i, s)
		return nil, schema.Errorf(schema.CodeInternal, "silence not removed: %v", err)
	}
	c.auditOp(schema.OpAlertsUnsilence, req, nil)
	d.wake()
	s.Until = time.Now().UTC()
	return wireSilence(s), nil
}

func (c *Coordinator) doAlertsTest(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.AlertsTestRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	d := c.dl
	d.mu.Lock()
	if err := d.leading(); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	nt, why := d.notifiers[req.Receiver], d.problems[req.Receiver]
	d.mu.Unlock()
	if nt == nil {
		if why != "" {
			return nil, schema.Errorf(schema.CodeSystemNotReady, "receiver %s cannot deliver: %s", req.Receiver, why)
		}
		return nil, schema.Errorf(schema.CodeNotFound, "no receiver %s in the alerts configuration", req.Receiver)
	}
	now := time.Now().UTC()
	a := schema.Alert{Type: schema.TypeAlert, AlertID: uuid.NewString(), Severity: schema.SeverityInfo, Kind: schema.AlertTest,
		Status: schema.AlertStatusFiring, Message: "test notification from restartcoord coordinator " + c.cfg.ID,
		Timestamp: now, Source: c.cfg.ID}
	n := notify.Notification{ID: "test-" + a.AlertID, Fingerprint: a.Fingerprint() + "/" + a.AlertID, Status: a.Status,
		Alert: a, Count: 1, FirstSeen: now, Test: true}
	tctx, cancel := context.WithTimeout(ctx, notifyTry)
	err := nt.Notify(tctx, n)
	cancel()
	res := schema.AlertsTestResult{Type: schema.TypeAlertsTest, Receiver: req.Receiver, Delivered: err == nil,
		NotificationID: n.ID, DurationMs: float64(time.Since(now).Microseconds()) / 1000}
	if err != nil {
		res.Error = err.Error()
	}
	c.auditOp(schema.OpAlertsTest, req, err)
	return res, nil
}

func (c *Coordinator) doAlertsConfigSet(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.AlertsConfigSet
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	cfg, err := alerting.Parse([]byte(req.Config))
	if err != nil {
		return nil, schema.Invalid("config", "%v", err)
	}
	d := c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.leading(); err != nil {
		return nil, err
	}
	if _, err := c.state.kv.Put(ctx, alertConfigKey, []byte(req.Config)); err != nil {
		return nil, schema.Errorf(schema.CodeInternal, "alert configuration not stored: %v", err)
	}
	d.configure(alertSourceStore, req.Config, cfg)
	c.auditOp(schema.OpAlertsConfigSet, map[string]any{"receivers": len(cfg.Receivers), "routes": len(cfg.Routes)}, nil)
	d.wake()
	return d.configReply(), nil
}

func (c *Coordinator) doAlertsConfigGet(ctx context.Context, data []byte, _ string, _ uint64) (any, error) {
	var req schema.EmptyRequest
	if err := schema.Decode(data, &req); err != nil {
		return nil, err
	}
	d := c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.leading(); err != nil {
		return nil, err
	}
	return d.configReply(), nil
}

// configReply (d.mu held).
func (d *delivery) configReply() schema.AlertsConfig {
	out := schema.AlertsConfig{Type: schema.TypeAlertsConfig, Source: d.source, Config: d.text, Receivers: d.receivers()}
	if len(d.problems) > 0 {
		out.Problems = d.problems
	}
	return out
}

// auditOp records an operator's alert operation in ORCH_AUDIT. The caller's
// identity is not known here yet (forwarded actions carry no request info).
func (c *Coordinator) auditOp(op string, params any, err error) {
	a := schema.Audit{Type: schema.TypeAudit, Operation: op, User: "anonymous", Success: err == nil,
		Error: schema.AsError(err), Timestamp: time.Now().UTC()}
	if b, e := json.Marshal(params); e == nil {
		_ = json.Unmarshal(b, &a.Parameters)
	}
	c.keep("audit "+op, schema.AuditSubject(op), "audit-"+uuid.NewString(), a)
}

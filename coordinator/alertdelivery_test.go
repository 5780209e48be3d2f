package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/alerting"
	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

// receivers are the four fake receivers, speaking the real protocols.
type receivers struct {
	pd      *notifytest.PagerDutyFake
	slack   *notifytest.SlackFake
	hook    *notifytest.WebhookFake
	smtp    *notifytest.SMTPFake
	hookKey []byte
	cfg     alerting.Config
}

// newReceivers starts the fakes and a configuration with the seed's routing
// to them, its secrets in files, and short intervals.
func newReceivers(t *testing.T, groupWait time.Duration) *receivers {
	t.Helper()
	dir := t.TempDir()
	key := []byte("0123456789abcdef0123456789abcdef")
	r := &receivers{pd: notifytest.NewPagerDuty(t), slack: notifytest.NewSlack(t), hook: notifytest.NewWebhook(t, key),
		smtp: notifytest.NewSMTP(t), hookKey: key}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	text := fmt.Sprintf(`group_wait: %s
group_interval: 1s
repeat_interval: 1h
receivers:
  - name: pagerduty
    type: pagerduty
    url: %s
    routing_key_file: %s
  - name: email
    type: email
    smtp: {host: %s, port: %d, tls: none}
    from: restartcoord@example.com
    to: [oncall@example.com]
  - name: slack
    type: slack
    url_file: %s
  - name: webhook
    type: webhook
    url: %s
    secret_file: %s
`, groupWait, r.pd.URL(), write("pd.key", "R0UT1NGKEY0123456789abcdef012345"), r.smtp.Host(), r.smtp.Port(),
		write("slack.url", r.slack.URL()), r.hook.URL(), write("hook.secret", string(key)))
	cfg, err := alerting.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	return r
}

// raise publishes an alert into ORCH_ALERTS as a node or coordinator does.
func (f *fleet) raise(kind, node, status string) schema.Alert {
	f.t.Helper()
	a := schema.Alert{Type: schema.TypeAlert, AlertID: uuid.NewString(), Severity: schema.AlertKinds[kind], Kind: kind,
		Status: status, NodeID: node, Message: kind + " on " + node + " (" + status + ")", Timestamp: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.bs.PublishDurable(ctx, schema.AlertSubject(a.Severity, kind), a); err != nil {
		f.t.Fatal(err)
	}
	return a
}

func (f *fleet) alertsStatus() schema.AlertsStatus {
	f.t.Helper()
	var st schema.AlertsStatus
	if err := f.cluster(schema.OpAlerts, map[string]any{}, &st); err != nil {
		f.t.Fatal(err)
	}
	return st
}

func alertingCoord(f *fleet, id string, r *receivers) *runningCoord {
	cfg := f.coordConfig(id)
	cfg.Alerts = &r.cfg
	return f.startCoordinatorWith(cfg)
}

// Each severity reaches its receivers (the seed's routing), grouped: a
// second alert of the same condition sends nothing more; its resolution
// resolves the PagerDuty incident with the same dedup key.
func TestAlertDeliveryRoutesGroupsAndResolves(t *testing.T) {
	f := newFleet(t, false)
	r := newReceivers(t, 50*time.Millisecond)
	alertingCoord(f, "c1", r)
	f.raise(schema.AlertRestartFailed, "n01", schema.AlertStatusFiring)
	f.raise(schema.AlertRestartFailed, "n01", schema.AlertStatusFiring) // the same condition again
	f.raise(schema.AlertSlowRestart, "n02", schema.AlertStatusFiring)
	f.raise(schema.AlertBackupAge, "n03", schema.AlertStatusFiring)

	evs := r.pd.WaitFor(t, func(e []notifytest.PagerDutyEvent) bool { return len(e) >= 1 }, 20*time.Second)
	if evs[0].EventAction != "trigger" || evs[0].DedupKey != notify.DedupKey("restart_failed/node/n01") ||
		evs[0].Payload == nil || evs[0].Payload.Severity != "critical" {
		t.Fatalf("PagerDuty got %+v", evs[0])
	}
	mails := r.smtp.WaitFor(t, func(m []notifytest.SMTPMessage) bool { return len(m) >= 1 }, 20*time.Second)
	if !strings.Contains(mails[0].Subject, "restart_failed") || mails[0].To[0] != "oncall@example.com" {
		t.Fatalf("email: %+v", mails[0])
	}
	msgs := r.slack.WaitFor(t, func(m []notifytest.SlackMessage) bool { return len(m) >= 1 }, 20*time.Second)
	if !strings.Contains(msgs[0].Text, "slow_restart") {
		t.Fatalf("slack: %q", msgs[0].Text)
	}
	hooks := r.hook.WaitFor(t, func(e []notifytest.WebhookEvent) bool { return len(e) >= 1 }, 20*time.Second)
	for _, k := range []string{"kind", "severity", "status", "node_id", "summary"} {
		if _, ok := hooks[0].Fields[k]; !ok {
			t.Fatalf("webhook body without %q: %s", k, hooks[0].Raw)
		}
	}
	if hooks[0].Payload.Kind != schema.AlertBackupAge || hooks[0].Payload.Status != schema.AlertStatusFiring {
		t.Fatalf("webhook: %s", hooks[0].Raw)
	}

	f.raise(schema.AlertRestartFailed, "n01", schema.AlertStatusResolved)
	evs = r.pd.WaitFor(t, func(e []notifytest.PagerDutyEvent) bool { return len(e) >= 2 }, 20*time.Second)
	if evs[1].EventAction != "resolve" || evs[1].DedupKey != evs[0].DedupKey {
		t.Fatalf("PagerDuty resolve: %+v after %+v", evs[1], evs[0])
	}
	if open := r.pd.Open(); len(open) != 0 {
		t.Fatalf("incidents still open: %v", open)
	}
	time.Sleep(500 * time.Millisecond) // a second notification of the first condition would be here by now
	if n := len(r.pd.Events()); n != 2 {
		t.Fatalf("PagerDuty got %d events, want trigger + resolve: %+v", n, r.pd.Events())
	}
	st := f.alertsStatus()
	if len(st.Firing) != 2 || len(st.Failures) != 0 {
		t.Fatalf("alerts: firing %+v failures %+v", st.Firing, st.Failures)
	}
}

// A receiver down, then up: the notification arrives once it is up; a 400
// is not tried again and is listed as a failure; a 429's Retry-After is
// waited out.
func TestAlertDeliveryRetries(t *testing.T) {
	f := newFleet(t, false)
	r := newReceivers(t, 10*time.Millisecond)
	alertingCoord(f, "c1", r)

	r.hook.SetDown(true)
	f.raise(schema.AlertMaintenanceDue, "n01", schema.AlertStatusFiring)
	f.waitFor(20*time.Second, "three refused tries", func() bool { return r.hook.Requests() >= 3 })
	r.hook.SetDown(false)
	ev := r.hook.WaitFor(t, func(e []notifytest.WebhookEvent) bool { return len(e) >= 1 }, 30*time.Second)
	if ev[0].Payload.Kind != schema.AlertMaintenanceDue {
		t.Fatalf("webhook: %s", ev[0].Raw)
	}

	r.slack.FailNext(1, 400, "")
	f.raise(schema.AlertReconnectionRate, "", schema.AlertStatusFiring)
	f.waitFor(20*time.Second, "the 400 listed as a failure", func() bool {
		for _, d := range f.alertsStatus().Failures {
			if d.Receiver == "slack" && d.State == alerting.DeliveryFailed && d.Attempts == 1 {
				return true
			}
		}
		return false
	})
	time.Sleep(1500 * time.Millisecond)
	if n := r.slack.Requests(); n != 1 {
		t.Fatalf("slack was tried %d times after a 400, want 1", n)
	}

	r.slack.FailNext(1, 429, "2")
	asked := time.Now()
	f.raise(schema.AlertBufferCapacity, "n02", schema.AlertStatusFiring)
	r.slack.WaitFor(t, func(m []notifytest.SlackMessage) bool { return len(m) >= 1 }, 20*time.Second)
	if waited := time.Since(asked); waited < 2*time.Second {
		t.Fatalf("delivered %s after a 429 with Retry-After: 2", waited)
	}
}

// A silence holds a kind's notifications; ended, they go out.
func TestAlertSilence(t *testing.T) {
	f := newFleet(t, false)
	r := newReceivers(t, 10*time.Millisecond)
	alertingCoord(f, "c1", r)
	var s schema.Silence
	if err := f.cluster(schema.OpAlertsSilence, schema.SilenceRequest{Kind: schema.AlertStateSize, NodeID: "n01",
		Duration: 3600, Reason: "known: migration"}, &s); err != nil {
		t.Fatal(err)
	}
	f.raise(schema.AlertStateSize, "n01", schema.AlertStatusFiring)
	f.raise(schema.AlertStateSize, "n02", schema.AlertStatusFiring)
	ev := r.hook.WaitFor(t, func(e []notifytest.WebhookEvent) bool { return len(e) >= 1 }, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	if len(r.hook.Events()) != 1 || ev[0].Payload.NodeID != "n02" {
		t.Fatalf("with n01 silenced the webhook got %d events, first %s", len(r.hook.Events()), ev[0].Raw)
	}
	if st := f.alertsStatus(); len(st.Silences) != 1 || st.Silences[0].SilenceID != s.SilenceID {
		t.Fatalf("silences: %+v", st.Silences)
	}
	if err := f.cluster(schema.OpAlertsUnsilence, schema.UnsilenceRequest{SilenceID: s.SilenceID}, &s); err != nil {
		t.Fatal(err)
	}
	r.hook.WaitFor(t, func(e []notifytest.WebhookEvent) bool { return len(e) >= 2 && e[1].Payload.NodeID == "n01" }, 20*time.Second)

	var bad map[string]any
	err := f.cluster(schema.OpAlertsSilence, map[string]any{"kind": "no_such_kind", "duration": 60, "reason": "x"}, &bad)
	if se := (*schema.Error)(nil); !errors.As(err, &se) || se.Code != schema.CodeInvalidParameters {
		t.Fatalf("silence of an unknown kind: %v", err)
	}

	var res schema.AlertsTestResult
	if err := f.cluster(schema.OpAlertsTest, schema.AlertsTestRequest{Receiver: "pagerduty"}, &res); err != nil || !res.Delivered {
		t.Fatalf("alerts test: %+v, %v", res, err)
	}
	if evs := r.pd.Events(); len(evs) != 1 || evs[0].Payload == nil || !strings.Contains(evs[0].Payload.Summary, "test") {
		t.Fatalf("test notification: %+v", evs)
	}
}

// A configuration set over NATS with several problems is refused with all
// of them, and changes nothing.
func TestAlertsConfigSetValidates(t *testing.T) {
	f := newFleet(t, false)
	r := newReceivers(t, 10*time.Millisecond)
	alertingCoord(f, "c1", r)
	var out schema.AlertsConfig
	inline := "receivers:\n  - name: pd\n    type: pagerduty\n    routing_key: inline-secret\n"
	err := f.cluster(schema.OpAlertsConfigSet, schema.AlertsConfigSet{Config: inline}, &out)
	var se *schema.Error
	if !errors.As(err, &se) || se.Code != schema.CodeInvalidParameters || !strings.Contains(se.Message, "routing_key_file") ||
		strings.Contains(se.Message, "inline-secret") {
		t.Fatalf("an inline secret: %v", err)
	}
	bad := "receivers:\n  - name: x\n    type: carrier-pigeon\nroutes:\n  - receivers: [nobody]\n"
	err = f.cluster(schema.OpAlertsConfigSet, schema.AlertsConfigSet{Config: bad}, &out)
	if !errors.As(err, &se) || se.Code != schema.CodeInvalidParameters || !strings.Contains(se.Message, "carrier-pigeon") ||
		!strings.Contains(se.Message, "nobody") {
		t.Fatalf("two problems, both reported: %v", err)
	}
	if err := f.cluster(schema.OpAlertsConfigGet, map[string]any{}, &out); err != nil || out.Source != "flags" || len(out.Receivers) != 4 {
		t.Fatalf("config after a refused set: %+v, %v", out, err)
	}
}

// The leader killed during a burst: every condition is delivered after the
// failover, none lost, and none twice under two notification ids.
func TestAlertDeliveryLeaderFailover(t *testing.T) {
	f := newFleet(t, false)
	r := newReceivers(t, 10*time.Millisecond)
	c1 := alertingCoord(f, "c1", r)
	f.waitFor(15*time.Second, "c1 leading", func() bool { ok, _ := c1.IsLeader(); return ok })
	alertingCoord(f, "c2", r)
	const nodes = 40
	for i := range nodes {
		f.raise(schema.AlertMaintenanceDue, fmt.Sprintf("n%02d", i), schema.AlertStatusFiring)
		if i == nodes/2 {
			c1.Kill()
		}
	}
	defer func() {
		if t.Failed() {
			st := f.alertsStatus()
			t.Logf("leader %s: %d firing, %d deliveries, failures %+v", st.Leader, len(st.Firing), len(st.Deliveries), st.Failures)
		}
	}()
	evs := r.hook.WaitFor(t, func(e []notifytest.WebhookEvent) bool {
		seen := map[string]bool{}
		for _, ev := range e {
			seen[ev.Payload.NodeID] = true
		}
		return len(seen) == nodes
	}, 60*time.Second)
	ids := map[string]string{} // node -> webhook-id
	for _, ev := range evs {
		if prev, ok := ids[ev.Payload.NodeID]; ok && prev != ev.ID {
			t.Fatalf("%s notified twice under two ids (%s, %s)", ev.Payload.NodeID, prev, ev.ID)
		}
		ids[ev.Payload.NodeID] = ev.ID
	}
	t.Logf("%d conditions delivered through a leader change (%d requests, %d duplicates by webhook-id)", nodes, len(evs), len(evs)-nodes)
}

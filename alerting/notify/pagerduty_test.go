package notify_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

const routingKey = "R0123456789abcdef0123456789abcde"

func newPagerDuty(t *testing.T) (*notify.PagerDuty, *notifytest.PagerDutyFake) {
	t.Helper()
	fake := notifytest.NewPagerDuty(t)
	pd, err := notify.NewPagerDuty("oncall", fake.URL(), routingKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pd, fake
}

func TestPagerDutyTriggerThenResolve(t *testing.T) {
	pd, fake := newPagerDuty(t)
	n := firing(schema.AlertRestartFailed, "node-2")
	if err := pd.Notify(testCtx(t), n); err != nil {
		t.Fatalf("trigger: %v", err)
	}
	if got, want := fake.Open(), []string{"restartcoord/restart_failed/node/node-2"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("got open %v, want %v", got, want)
	}
	if err := pd.Notify(testCtx(t), resolved(n)); err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if got := fake.Open(); len(got) != 0 {
		t.Errorf("got open %v after the resolve, want none", got)
	}

	events := fake.Events()
	if len(events) != 2 {
		t.Fatalf("got %d events, want 2", len(events))
	}
	trig, res := events[0], events[1]
	if trig.EventAction != "trigger" || res.EventAction != "resolve" {
		t.Errorf("got actions %q, %q; want trigger, resolve", trig.EventAction, res.EventAction)
	}
	if trig.DedupKey != notify.DedupKey(n.Fingerprint) || res.DedupKey != trig.DedupKey {
		t.Errorf("got dedup keys %q, %q; want both %q", trig.DedupKey, res.DedupKey, notify.DedupKey(n.Fingerprint))
	}
	if trig.RoutingKey != routingKey || res.RoutingKey != routingKey {
		t.Errorf("got routing keys %q, %q; want %q", trig.RoutingKey, res.RoutingKey, routingKey)
	}
	if res.Payload != nil {
		t.Errorf("got a payload on resolve: %+v", res.Payload)
	}
	p := trig.Payload
	if p == nil {
		t.Fatal("trigger has no payload")
	}
	checks := []struct{ field, got, want string }{
		{"summary", p.Summary, "[CRITICAL] restart_failed on node-2: restart of node-2 failed: exit 3"},
		{"source", p.Source, "node-2"},
		{"severity", p.Severity, "critical"},
		{"timestamp", p.Timestamp, "2026-03-14T09:26:53Z"},
		{"component", p.Component, "restartcoord"},
		{"group", p.Group, "roll-7"},
		{"class", p.Class, "restart_failed"},
		{"User-Agent", trig.Header.Get("User-Agent"), "restartcoord"},
		{"Content-Type", trig.Header.Get("Content-Type"), "application/json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	cd := p.CustomDetails
	if cd["exit_code"] != float64(3) || cd["fingerprint"] != n.Fingerprint || cd["count"] != float64(3) ||
		cd["alert_id"] != "a-1" || cd["first_seen"] != "2026-03-14T09:23:53Z" {
		t.Errorf("got custom_details %v, want the details, fingerprint, count, alert id and first seen", cd)
	}
}

func TestPagerDutySeverities(t *testing.T) {
	pd, fake := newPagerDuty(t)
	tests := []struct {
		kind string
		want string
	}{
		{schema.AlertStateLoss, "critical"},
		{schema.AlertSlowRestart, "warning"},
		{schema.AlertBackupAge, "info"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			if err := pd.Notify(testCtx(t), firing(tt.kind, "node-1")); err != nil {
				t.Fatal(err)
			}
			events := fake.Events()
			if got := events[len(events)-1].Payload.Severity; got != tt.want {
				t.Errorf("got severity %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPagerDutyClusterWideAndTest(t *testing.T) {
	pd, fake := newPagerDuty(t)
	n := firing(schema.AlertBackupAge, "")
	n.Alert.RollID = ""
	n.Fingerprint = n.Alert.Fingerprint()
	n.Test = true
	if err := pd.Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	ev := fake.Events()[0]
	if ev.Payload.Source != "coord-1" || !strings.HasPrefix(ev.Payload.Summary, "[TEST] [INFO] backup_age:") ||
		ev.DedupKey != "restartcoord/backup_age" {
		t.Errorf("got source %q, summary %q, dedup key %q", ev.Payload.Source, ev.Payload.Summary, ev.DedupKey)
	}
}

func TestPagerDutyLongFingerprint(t *testing.T) {
	pd, fake := newPagerDuty(t)
	n := firing(schema.AlertRestartFailed, strings.Repeat("n", 250))
	n.Fingerprint = n.Alert.Fingerprint()
	n.Alert.Message = strings.Repeat("é", 2000) // past the 1024 summary limit, cut on a character
	if err := pd.Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	if err := pd.Notify(testCtx(t), resolved(n)); err != nil {
		t.Fatal(err)
	}
	ev := fake.Events()
	if len(ev[0].DedupKey) > 255 || ev[0].DedupKey != ev[1].DedupKey {
		t.Errorf("got dedup keys %q, %q; want one of at most 255 bytes", ev[0].DedupKey, ev[1].DedupKey)
	}
	if len(fake.Open()) != 0 {
		t.Errorf("got open %v, want none", fake.Open())
	}
}

func TestPagerDutyErrors(t *testing.T) {
	pd, fake := newPagerDuty(t)
	n := firing(schema.AlertRestartFailed, "node-2")

	fake.FailNext(1, http.StatusBadRequest, "")
	wantClass(t, pd.Notify(testCtx(t), n), http.StatusBadRequest, false, 0)

	fake.FailNext(1, http.StatusTooManyRequests, "2")
	wantClass(t, pd.Notify(testCtx(t), n), http.StatusTooManyRequests, true, 2*time.Second)

	fake.SetDown(true)
	wantClass(t, pd.Notify(testCtx(t), n), http.StatusServiceUnavailable, true, 0)
	fake.SetDown(false)

	if err := pd.Notify(testCtx(t), n); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
	if got, want := fake.Requests(), 4; got != want {
		t.Errorf("got %d requests, want %d", got, want)
	}
	if got := len(fake.Events()); got != 1 {
		t.Errorf("got %d events recorded, want 1", got)
	}
}

// TestPagerDutyFakeRefusesBadEvents checks the fake refuses what PagerDuty
// would, so that a notifier passing against it sends valid events.
func TestPagerDutyFakeRefusesBadEvents(t *testing.T) {
	fake := notifytest.NewPagerDuty(t)
	tests := []struct{ name, body string }{
		{"not JSON", `{`},
		{"no routing key", `{"event_action":"resolve","dedup_key":"k"}`},
		{"bad action", `{"routing_key":"k","event_action":"explode","dedup_key":"k"}`},
		{"resolve without dedup key", `{"routing_key":"k","event_action":"resolve"}`},
		{"trigger without payload", `{"routing_key":"k","event_action":"trigger","dedup_key":"k"}`},
		{"bad severity", `{"routing_key":"k","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"high"}}`},
		{"unknown field", `{"routing_key":"k","event_action":"resolve","dedup_key":"k","dedupkey":"k"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(fake.URL(), "application/json", bytes.NewBufferString(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("got HTTP %d, want 400", resp.StatusCode)
			}
		})
	}
	if got := len(fake.Events()); got != 0 {
		t.Errorf("got %d events recorded, want 0", got)
	}
}

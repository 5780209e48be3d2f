package alerting

import (
	"errors"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/schema"
)

func engineFor(t *testing.T) Engine {
	t.Helper()
	cfg, err := Parse([]byte(`group_wait: 30s
group_interval: 5m
repeat_interval: 4h
receivers:
  - {name: pd, type: pagerduty, routing_key_env: PD_KEY}
  - {name: hook, type: webhook, url: "https://hooks.example.com/x"}
routes:
  - {match: {severity: critical}, receivers: [pd, hook]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(cfg)
}

func dAlert(kind, node, status string) schema.Alert {
	return schema.Alert{Kind: kind, Severity: schema.AlertKinds[kind], NodeID: node, Status: status, Message: kind}
}

// One delivery per receiver, after the group wait; retried with a growing
// wait or the receiver's Retry-After; a 4xx is final; the resolution waits
// for the trigger it resolves.
func TestEngineDeliversRetriesAndOrders(t *testing.T) {
	e := engineFor(t)
	st := NewState()
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	e.Apply(st, dAlert(schema.AlertRestartFailed, "n1", schema.AlertStatusFiring), 1, t0)
	e.Apply(st, dAlert(schema.AlertSlowRestart, "n1", schema.AlertStatusFiring), 2, t0) // warning: routed nowhere
	if due := e.Plan(st, t0.Add(29*time.Second)); len(due) != 0 {
		t.Fatalf("due within the group wait: %+v", due)
	}
	due := e.Plan(st, t0.Add(30*time.Second))
	if len(due) != 2 || len(st.Groups) != 1 {
		t.Fatalf("after the group wait: %d due, %d groups", len(due), len(st.Groups))
	}
	at := t0.Add(30 * time.Second)
	pd, hook := due[0], due[1]
	if pd.Receiver != "pd" {
		pd, hook = hook, pd
	}
	e.Record(st, hook.Key, nil, at)
	e.Record(st, pd.Key, &notify.DeliveryError{Retryable: true, Status: 503, Err: errors.New("503")}, at)
	e.Record(st, pd.Key, &notify.DeliveryError{Retryable: true, Status: 503, Err: errors.New("503")}, at)
	if got := st.Deliveries[pd.Key].NextAttempt.Sub(at); got != 2*time.Second {
		t.Fatalf("after two refusals the wait is %s, want 2s", got)
	}
	e.Record(st, pd.Key, &notify.DeliveryError{Retryable: true, Status: 429, RetryAfter: time.Minute, Err: errors.New("429")}, at)
	if got := st.Deliveries[pd.Key].NextAttempt.Sub(at); got != time.Minute {
		t.Fatalf("Retry-After 60s not honoured: %s", got)
	}
	// Resolved meanwhile: its delivery to pd waits behind the trigger.
	e.Apply(st, dAlert(schema.AlertRestartFailed, "n1", schema.AlertStatusResolved), 3, at)
	later := at.Add(6 * time.Minute)
	due = e.Plan(st, later)
	for _, d := range due {
		if d.Receiver == "pd" && d.Notification.Status == schema.AlertStatusResolved {
			t.Fatalf("the resolution went before its trigger: %+v", due)
		}
	}
	e.Record(st, pd.Key, nil, later)
	var res *Delivery
	for _, d := range e.Plan(st, later) {
		if d.Receiver == "pd" {
			res = d
		}
	}
	if res == nil || res.Notification.Status != schema.AlertStatusResolved {
		t.Fatalf("after the trigger, no resolution to pd: %+v", res)
	}
	due = []*Delivery{res}
	e.Record(st, due[0].Key, &notify.DeliveryError{Status: 400, Err: errors.New("400")}, later)
	if d := st.Deliveries[due[0].Key]; d.Status != DeliveryFailed || d.Attempts != 1 {
		t.Fatalf("a 400: %+v", d)
	}
	for _, d := range e.Plan(st, later.Add(time.Hour)) {
		if d.Receiver == "pd" {
			t.Fatalf("a failed delivery tried again: %+v", d)
		}
	}
}

// A replayed alert (delivered again after a leader died) changes nothing;
// an older one delivered after a newer one of another group still counts.
func TestEngineAppliesRedeliveriesOnce(t *testing.T) {
	e := engineFor(t)
	st := NewState()
	t0 := time.Now()
	e.Apply(st, dAlert(schema.AlertRestartFailed, "n2", schema.AlertStatusFiring), 7, t0)
	e.Apply(st, dAlert(schema.AlertRestartFailed, "n1", schema.AlertStatusFiring), 5, t0)
	e.Apply(st, dAlert(schema.AlertRestartFailed, "n1", schema.AlertStatusFiring), 5, t0)
	if len(st.Groups) != 2 || st.Groups["restart_failed/node/n1"].Count != 1 {
		t.Fatalf("groups: %+v", st.Groups)
	}
}

// A silence holds a firing group; Next waits for its end rather than
// spinning on a due time in the past.
func TestEngineSilence(t *testing.T) {
	e := engineFor(t)
	st := NewState()
	t0 := time.Now()
	st.Silences = []Silence{{ID: "s1", Kind: schema.AlertRestartFailed, NodeID: "n1", Until: t0.Add(time.Hour), Reason: "r", CreatedAt: t0}}
	e.Apply(st, dAlert(schema.AlertRestartFailed, "n1", schema.AlertStatusFiring), 1, t0)
	if due := e.Plan(st, t0.Add(time.Minute)); len(due) != 0 {
		t.Fatalf("silenced, yet due: %+v", due)
	}
	if next := e.Next(st, t0.Add(time.Minute)); !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("next %s, want the silence's end", next)
	}
	if due := e.Plan(st, t0.Add(time.Hour+time.Second)); len(due) != 2 {
		t.Fatalf("after the silence: %d due", len(due))
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 30: RetryMax} {
		if got := Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

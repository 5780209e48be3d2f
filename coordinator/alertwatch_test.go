package coordinator_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// Every assertion of this package about the alerts raised and resolved
// goes through the helpers of this file, which read what the coordinators
// (and nodes) published as kept in ORCH_ALERTS: to check alerts as a
// receiver gets them instead (through delivery), only this file changes.
// (TestBreakerAlertKeptThroughAnAlertsOutage reads ORCH_ALERTS itself: it
// is about the stream keeping alerts.) node is "" for a cluster-wide
// alert; a roll's alert that names no node is matched by its roll id.

// firing and resolved are the statuses the tests wait for.
const (
	firing   = schema.AlertStatusFiring
	resolved = schema.AlertStatusResolved
)

// alertWait bounds awaitAlert: the leader looks at most conditions every
// pass (50 ms here), the slower ones as often as the test configures.
const alertWait = 20 * time.Second

// storedAlerts reads every alert kept in ORCH_ALERTS, oldest first (one
// stored without a status is firing).
func storedAlerts(t testing.TB, f *fleet) []schema.Alert {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []schema.Alert
	err := f.bs.ReadSubject(ctx, schema.StreamAlerts, schema.AlertsSubjects, func(data []byte) error {
		var a schema.Alert
		if json.Unmarshal(data, &a) == nil {
			if a.Status == "" {
				a.Status = firing
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading alerts: %v", err)
	}
	return out
}

// alertsOf reads the alerts of kind about node with status, oldest first.
func alertsOf(t testing.TB, f *fleet, kind, node, status string) []schema.Alert {
	t.Helper()
	var out []schema.Alert
	for _, a := range storedAlerts(t, f) {
		if a.Kind == kind && (a.NodeID == node || a.NodeID == "" && a.RollID == node) && a.Status == status {
			out = append(out, a)
		}
	}
	return out
}

// awaitAlert waits for the nth (from 1) alert of kind about node with
// status, checks it is well formed, and returns it.
func awaitAlert(t testing.TB, f *fleet, kind, node, status string, nth int) schema.Alert {
	t.Helper()
	deadline := time.Now().Add(alertWait)
	for {
		got := alertsOf(t, f, kind, node, status)
		if len(got) >= nth {
			a := got[nth-1]
			if err := a.Validate(); err != nil || a.Severity != schema.AlertKinds[kind] || a.AlertID == "" || a.Message == "" {
				t.Fatalf("%s alert %s of %s: %+v (%v); want severity %s, an id and a message", status, kind, node, a, err, schema.AlertKinds[kind])
			}
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s alert %d of kind %s about %s (have %d); alerts of %s: %s",
				alertWait, status, nth, kind, node, len(got), node, alertSummary(t, f, node))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantAlerts fails unless exactly n alerts of kind about node with status
// are stored.
func wantAlerts(t testing.TB, f *fleet, kind, node, status string, n int) {
	t.Helper()
	if got := alertsOf(t, f, kind, node, status); len(got) != n {
		t.Fatalf("%d %s alerts of kind %s about %s, want %d; alerts of %s: %s", len(got), status, kind, node, n, node, alertSummary(t, f, node))
	}
}

// alertSummary lists a node's alerts in order (kind/status), for a
// failure message.
func alertSummary(t testing.TB, f *fleet, node string) string {
	t.Helper()
	var out []string
	for _, a := range storedAlerts(t, f) {
		if a.NodeID == node || a.NodeID == "" && a.RollID == node {
			out = append(out, a.Kind+"/"+a.Status)
		}
	}
	return "[" + strings.Join(out, " ") + "]"
}

// wantNoAlerts fails if any alert of kind is stored, about any node or
// none, firing or resolved.
func wantNoAlerts(t testing.TB, f *fleet, kind string) {
	t.Helper()
	var got []string
	for _, a := range storedAlerts(t, f) {
		if a.Kind == kind {
			got = append(got, a.NodeID+"/"+a.Status+": "+a.Message)
		}
	}
	if len(got) > 0 {
		t.Fatalf("%d %s alerts, want none: %v", len(got), kind, got)
	}
}

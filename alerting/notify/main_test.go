package notify_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/internal/leaktest"
	"github.com/restartcoord/restartcoord/schema"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// testCtx is a context that ends with the test, or after 5 s.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	t0        = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	firstSeen = t0.Add(-3 * time.Minute)
)

// firing is a firing notification of kind on node (or cluster-wide).
func firing(kind, node string) notify.Notification {
	a := schema.Alert{Type: "alert", AlertID: "a-1", Severity: schema.AlertKinds[kind], Kind: kind,
		Status: schema.AlertStatusFiring, NodeID: node, RollID: "roll-7", Message: "restart of " + node + " failed: exit 3",
		Details: map[string]any{"exit_code": 3, "attempt": "2/3"}, Timestamp: t0, Source: "coord-1"}
	return notify.Notification{ID: "n-" + kind + "-1", Fingerprint: a.Fingerprint(), Status: schema.AlertStatusFiring,
		Alert: a, Count: 3, FirstSeen: firstSeen}
}

// resolved is n's group resolved.
func resolved(n notify.Notification) notify.Notification {
	n.ID += "-resolved"
	n.Status = schema.AlertStatusResolved
	n.Alert.Status = schema.AlertStatusResolved
	n.Alert.Message = "restarted"
	return n
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// deliveryError is err as a *DeliveryError, failing t if it is not one.
func deliveryError(t testing.TB, err error) *notify.DeliveryError {
	t.Helper()
	de, ok := errors.AsType[*notify.DeliveryError](err)
	if !ok {
		t.Fatalf("got error %v (%T), want a *notify.DeliveryError", err, err)
	}
	return de
}

// wantClass checks err's classification.
func wantClass(t testing.TB, err error, status int, retry bool, after time.Duration) {
	t.Helper()
	de := deliveryError(t, err)
	gotRetry, gotAfter := notify.RetryAfter(err)
	if de.Status != status || gotRetry != retry || gotAfter != after {
		t.Errorf("got status %d, retry %v after %v (%v); want status %d, retry %v after %v",
			de.Status, gotRetry, gotAfter, err, status, retry, after)
	}
}

package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

// The Standard Webhooks published test vector.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestWebhookKey(t *testing.T) {
	specKey, _ := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	tests := []struct {
		name    string
		file    string
		want    []byte
		wantErr bool
	}{
		{"whsec", specSecret, specKey, false},
		{"whsec with whitespace", "  " + specSecret + "\n", specKey, false},
		{"raw", "s3cret-value", []byte("s3cret-value"), false},
		{"raw with newline", "s3cret-value\r\n", []byte("s3cret-value"), false},
		{"bad base64", "whsec_not*base64!", nil, true},
		{"empty after whsec", "whsec_\n", nil, true},
		{"empty", "", nil, true},
		{"only whitespace", " \n\t", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := notify.WebhookKey([]byte(tt.file))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "not*base64") {
				t.Errorf("error %q repeats the secret", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got key %x, want %x", got, tt.want)
			}
		})
	}
}

func TestSignWebhookSpecVector(t *testing.T) {
	key, err := notify.WebhookKey([]byte(specSecret))
	if err != nil {
		t.Fatal(err)
	}
	if got := notify.SignWebhook(key, specID, specTimestamp, []byte(specBody)); got != specSignature {
		t.Errorf("got %q, want %q", got, specSignature)
	}
}

func TestSignWebhookIndependent(t *testing.T) {
	key := []byte("a raw key, not base64")
	body := []byte(`{"kind":"restart_failed"}`)
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", "n-1", 1700000000, body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := notify.SignWebhook(key, "n-1", 1700000000, body); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestVerifyWebhook(t *testing.T) {
	key, _ := notify.WebhookKey([]byte(specSecret))
	tests := []struct {
		name      string
		key       []byte
		timestamp string
		signature string
		body      string
		want      error // nil, ErrWebhookSignature, or errAny
	}{
		{"spec vector", key, "1614265330", specSignature, specBody, nil},
		{"one of several", key, "1614265330", "v1,bm9wZQ== v2,xyz " + specSignature, specBody, nil},
		{"tampered body", key, "1614265330", specSignature, `{"test": 2432232315}`, notify.ErrWebhookSignature},
		{"other timestamp", key, "1614265331", specSignature, specBody, notify.ErrWebhookSignature},
		{"wrong key", []byte("other"), "1614265330", specSignature, specBody, notify.ErrWebhookSignature},
		{"no v1", key, "1614265330", strings.Replace(specSignature, "v1,", "v2,", 1), specBody, notify.ErrWebhookSignature},
		{"empty signature", key, "1614265330", "", specBody, notify.ErrWebhookSignature},
		{"bad timestamp", key, "yesterday", specSignature, specBody, errAny},
		{"no key", nil, "1614265330", specSignature, specBody, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := notify.VerifyWebhook(tt.key, specID, tt.timestamp, tt.signature, []byte(tt.body))
			switch {
			case tt.want == nil && err != nil, tt.want != nil && err == nil:
				t.Errorf("got %v, want %v", err, tt.want)
			case tt.want == notify.ErrWebhookSignature && !errors.Is(err, notify.ErrWebhookSignature):
				t.Errorf("got %v, want ErrWebhookSignature", err)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestWebhookSignedPayload(t *testing.T) {
	key, _ := notify.WebhookKey([]byte(specSecret))
	fake := notifytest.NewWebhook(t, key)
	w, err := notify.NewWebhook("hook", fake.URL(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := firing(schema.AlertRestartFailed, "node-2")
	if err := w.Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	if err := w.Notify(testCtx(t), resolved(n)); err != nil {
		t.Fatal(err)
	}
	events := fake.Events()
	if len(events) != 2 {
		t.Fatalf("got %d events, want 2", len(events))
	}
	ev := events[0]
	if ev.ID != n.ID || ev.Payload.ID != n.ID {
		t.Errorf("got webhook-id %q, payload id %q; want %q", ev.ID, ev.Payload.ID, n.ID)
	}
	f := ev.Fields
	want := map[string]any{"kind": "restart_failed", "severity": "critical", "status": "firing", "node_id": "node-2",
		"summary": n.Alert.Message, "fingerprint": n.Fingerprint, "alert_id": "a-1", "roll_id": "roll-7",
		"timestamp": "2026-03-14T09:26:53Z", "count": float64(3), "test": false, "type": "alert.firing"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s: got %v, want %v", k, f[k], v)
		}
	}
	if d, _ := f["details"].(map[string]any); d["exit_code"] != float64(3) {
		t.Errorf("got details %v, want exit_code 3", f["details"])
	}
	if got := events[1].Fields["status"]; got != "resolved" {
		t.Errorf("got resolution status %v, want resolved", got)
	}
	if got := ev.Header.Get("User-Agent"); got != notify.UserAgent {
		t.Errorf("got User-Agent %q, want %q", got, notify.UserAgent)
	}
}

func TestWebhookWrongKeyRefused(t *testing.T) {
	fake := notifytest.NewWebhook(t, []byte("the receiver's key"))
	w, err := notify.NewWebhook("hook", fake.URL(), []byte("another key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, w.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2")), http.StatusUnauthorized, false, 0)

	unsigned, err := notify.NewWebhook("hook", fake.URL(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, unsigned.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2")), http.StatusUnauthorized, false, 0)
	if got := len(fake.Events()); got != 0 {
		t.Errorf("got %d events accepted, want 0", got)
	}
}

func TestWebhookRetryKeepsID(t *testing.T) {
	key := []byte("k")
	fake := notifytest.NewWebhook(t, key)
	w, err := notify.NewWebhook("hook", fake.URL(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := firing(schema.AlertRestartFailed, "node-2")
	fake.SetDown(true)
	wantClass(t, w.Notify(testCtx(t), n), http.StatusServiceUnavailable, true, 0)
	fake.SetDown(false)
	if err := w.Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	if ev := fake.Events(); len(ev) != 1 || ev[0].ID != n.ID {
		t.Errorf("got %+v, want one event with id %q", ev, n.ID)
	}
}

func TestWebhookRefusesBadID(t *testing.T) {
	fake := notifytest.NewWebhook(t, nil)
	w, err := notify.NewWebhook("hook", fake.URL(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := firing(schema.AlertRestartFailed, "node-2")
	n.ID = ""
	wantClass(t, w.Notify(testCtx(t), n), 0, false, 0)
	if fake.Requests() != 0 {
		t.Errorf("got %d requests, want none", fake.Requests())
	}
}

// ExampleVerifyWebhook checks a request the way a receiver would.
func ExampleVerifyWebhook() {
	key, err := notify.WebhookKey([]byte("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")) // the secret file
	if err != nil {
		panic(err)
	}
	// From the request: its webhook-id, webhook-timestamp and
	// webhook-signature headers and its raw body. A receiver also refuses a
	// timestamp more than notify.WebhookTolerance from its clock.
	err = notify.VerifyWebhook(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
		"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`))
	fmt.Println(err)
	// Output: <nil>
}

package notify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

// Compile-time checks: every receiver is a Notifier.
var (
	_ notify.Notifier = (*notify.PagerDuty)(nil)
	_ notify.Notifier = (*notify.Slack)(nil)
	_ notify.Notifier = (*notify.Webhook)(nil)
	_ notify.Notifier = (*notify.Email)(nil)
)

func TestRetryAfter(t *testing.T) {
	cause := errors.New("boom")
	tests := []struct {
		name  string
		err   error
		retry bool
		after time.Duration
	}{
		{"nil", nil, false, 0},
		{"retryable", &notify.DeliveryError{Receiver: "r", Retryable: true, RetryAfter: 2 * time.Second, Err: cause}, true, 2 * time.Second},
		{"not retryable", &notify.DeliveryError{Receiver: "r", Status: 400, Err: cause}, false, 0},
		{"wrapped", fmt.Errorf("try 3: %w", &notify.DeliveryError{Receiver: "r", Status: 404, Err: cause}), false, 0},
		{"unclassified", cause, true, 0},
		{"context", context.DeadlineExceeded, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			retry, after := notify.RetryAfter(tt.err)
			if retry != tt.retry || after != tt.after {
				t.Errorf("got %v, %v; want %v, %v", retry, after, tt.retry, tt.after)
			}
		})
	}
}

func TestDeliveryErrorUnwrap(t *testing.T) {
	cause := errors.New("boom")
	err := error(&notify.DeliveryError{Receiver: "ops", Err: cause})
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause) is false", err)
	}
	if got, want := err.Error(), "receiver ops: boom"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestHTTPClassification runs every HTTP answer class through one receiver
// (the webhook: any 2xx is success there).
func TestHTTPClassification(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		retry      bool
		after      time.Duration
	}{
		{"400", http.StatusBadRequest, "", false, 0},
		{"404", http.StatusNotFound, "", false, 0},
		{"410 with Retry-After", http.StatusGone, "30", false, 0},
		{"429 Retry-After seconds", http.StatusTooManyRequests, "2", true, 2 * time.Second},
		{"429 no Retry-After", http.StatusTooManyRequests, "", true, 0},
		{"429 bad Retry-After", http.StatusTooManyRequests, "soon", true, 0},
		{"429 huge Retry-After", http.StatusTooManyRequests, "99999999999999999", true, notify.MaxRetryAfter},
		{"429 Retry-After in the past", http.StatusTooManyRequests, "Wed, 21 Oct 2015 07:28:00 GMT", true, 0},
		{"500", http.StatusInternalServerError, "", true, 0},
		{"503 Retry-After", http.StatusServiceUnavailable, "7", true, 7 * time.Second},
	}
	fake := notifytest.NewWebhook(t, nil)
	w, err := notify.NewWebhook("hook", fake.URL(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake.FailNext(1, tt.status, tt.retryAfter)
			err := w.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2"))
			wantClass(t, err, tt.status, tt.retry, tt.after)
		})
	}
	if got := len(fake.Events()); got != 0 {
		t.Errorf("got %d events recorded, want 0", got)
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	fake := notifytest.NewWebhook(t, nil)
	w, err := notify.NewWebhook("hook", fake.URL(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fake.FailNext(1, http.StatusServiceUnavailable, time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat))
	retry, after := notify.RetryAfter(w.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2")))
	if !retry || after < 28*time.Second || after > 30*time.Second {
		t.Errorf("got retry %v after %v, want retry after about 30s", retry, after)
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	url := "http://" + refusedAddr(t) + "/services/T0/B0/SECRETTOKEN"
	pd, err := notify.NewPagerDuty("pd", url, "SECRETROUTINGKEY", nil)
	if err != nil {
		t.Fatal(err)
	}
	sl, err := notify.NewSlack("slack", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := notify.NewWebhook("hook", url, []byte("SECRETKEY"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []notify.Notifier{pd, sl, wh} {
		t.Run(n.Type(), func(t *testing.T) {
			err := n.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2"))
			wantClass(t, err, 0, true, 0)
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q holds a secret", err)
			}
		})
	}
}

func TestNotifyHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // answers only once the test is over
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first
	w, err := notify.NewWebhook("hook", srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = w.Notify(ctx, firing(schema.AlertRestartFailed, "node-2"))
	if took := time.Since(start); took > time.Second {
		t.Errorf("Notify took %v after its context ended", took)
	}
	wantClass(t, err, 0, true, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded in its chain", err)
	}
}

func TestResponseBodyIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte(strings.Repeat("upstream\nfailed ", 1<<16))) // 1 MiB
	}))
	t.Cleanup(srv.Close)
	w, err := notify.NewWebhook("hook", srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = w.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2"))
	wantClass(t, err, http.StatusBadGateway, true, 0)
	if msg := err.Error(); len(msg) > 400 || !strings.Contains(msg, "upstream failed") {
		t.Errorf("got a %d-byte message %.100q..., want a short one quoting the answer", len(msg), msg)
	}
}

func TestConstructorsRefuseBadArguments(t *testing.T) {
	tests := []struct {
		name string
		make func() error
	}{
		{"pagerduty no name", func() error { _, err := notify.NewPagerDuty("", "", "k", nil); return err }},
		{"pagerduty bad url", func() error { _, err := notify.NewPagerDuty("pd", "ftp://x/SECRET", "k", nil); return err }},
		{"pagerduty relative url", func() error { _, err := notify.NewPagerDuty("pd", "/v2/enqueue", "k", nil); return err }},
		{"pagerduty no key", func() error { _, err := notify.NewPagerDuty("pd", "", "", nil); return err }},
		{"pagerduty key with space", func() error { _, err := notify.NewPagerDuty("pd", "", "SECRET KEY", nil); return err }},
		{"slack no url", func() error { _, err := notify.NewSlack("s", "", nil); return err }},
		{"slack bad url", func() error { _, err := notify.NewSlack("s", "hooks.slack.com/services/SECRET", nil); return err }},
		{"slack unparsable url", func() error { _, err := notify.NewSlack("s", "http://[SECRET", nil); return err }},
		{"webhook bad url", func() error { _, err := notify.NewWebhook("w", "SECRET", nil, nil); return err }},
		{"email no host", func() error { _, err := notify.NewEmail("e", emailConfig("", 25)); return err }},
		{"email bad port", func() error { _, err := notify.NewEmail("e", emailConfig("mx", 70000)); return err }},
		{"email bad tls", func() error {
			c := emailConfig("mx", 25)
			c.TLS = "ssl"
			_, err := notify.NewEmail("e", c)
			return err
		}},
		{"email no to", func() error {
			c := emailConfig("mx", 25)
			c.To = nil
			_, err := notify.NewEmail("e", c)
			return err
		}},
		{"email bad to", func() error {
			c := emailConfig("mx", 25)
			c.To = []string{"ops"}
			_, err := notify.NewEmail("e", c)
			return err
		}},
		{"email bad from", func() error {
			c := emailConfig("mx", 25)
			c.From = "restartcoord"
			_, err := notify.NewEmail("e", c)
			return err
		}},
		{"email password without username", func() error {
			c := emailConfig("mx", 25)
			c.Password = "SECRET"
			_, err := notify.NewEmail("e", c)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.make()
			if err == nil {
				t.Fatal("got no error, want one")
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}

// Package notify holds the receivers that deliver alerts to people:
// PagerDuty (Events API v2), Slack (incoming webhook), a generic webhook
// signed the Standard Webhooks way, and email over SMTP. Each is a Notifier
// that makes one try at one Notification and says, with a *DeliveryError,
// whether it is worth trying again and after how long. It is not where
// alerts are grouped, routed, silenced or retried: package alerting decides
// what to send and when, and calls Notify.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/restartcoord/restartcoord/schema"
)

// Receiver types, as Notifier.Type returns them.
const (
	TypePagerDuty = "pagerduty"
	TypeSlack     = "slack"
	TypeWebhook   = "webhook"
	TypeEmail     = "email"
)

// UserAgent is the User-Agent of every request a notifier makes.
const UserAgent = "restartcoord"

// DefaultTimeout bounds one Notify whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// MaxResponseBody is how much of a receiver's answer is read (for the error
// message); the rest is left unread.
const MaxResponseBody = 64 << 10

// MaxRetryAfter caps a receiver's Retry-After: an alert is not held back
// longer than this on a receiver's say-so.
const MaxRetryAfter = time.Hour

// Notification is one message to one receiver about one alert group.
type Notification struct {
	// ID is the stable idempotency id of this notification: the webhook-id
	// header, the base of an email's Message-ID. It is the same on a retry.
	ID string `json:"id"`
	// Fingerprint names the group (schema.Alert.Fingerprint); PagerDuty's
	// dedup_key derives from it, so a resolution closes what the trigger
	// opened.
	Fingerprint string `json:"fingerprint"`
	// Status is schema.AlertStatusFiring or schema.AlertStatusResolved.
	Status string `json:"status"`
	// Alert is the newest alert of the group.
	Alert schema.Alert `json:"alert"`
	// Count is how many alerts the group has seen since it started firing.
	Count     int       `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	// Test marks `restartcoord alerts test RECEIVER`.
	Test bool `json:"test,omitempty"`
}

// Resolved reports whether n closes its group rather than opening or
// repeating it.
func (n Notification) Resolved() bool { return n.Status == schema.AlertStatusResolved }

// Notifier delivers notifications to one receiver of the configuration.
// Implementations are safe for concurrent use.
type Notifier interface {
	// Name is the receiver's name from the configuration.
	Name() string
	// Type is TypePagerDuty, TypeSlack, TypeWebhook or TypeEmail.
	Type() string
	// Notify makes one try at delivering n. It returns nil once the
	// receiver has accepted it, and a *DeliveryError otherwise.
	Notify(ctx context.Context, n Notification) error
}

// DeliveryError is a delivery that failed: what the receiver (or the
// network) answered, and whether it is worth trying again.
type DeliveryError struct {
	Receiver string
	// Status is the HTTP status or SMTP reply code, 0 if there was none
	// (connection refused, timeout).
	Status int
	// Retryable is true for HTTP 429 and 5xx, network errors and SMTP 4xx;
	// false for the other HTTP 4xx, SMTP 5xx and a notification that cannot
	// be encoded.
	Retryable bool
	// RetryAfter is the receiver's Retry-After (seconds or HTTP-date), at
	// most MaxRetryAfter; 0 if it gave none.
	RetryAfter time.Duration
	Err        error
}

// Error describes the failure; it never holds a secret (routing key,
// webhook URL, password).
func (e *DeliveryError) Error() string {
	return "receiver " + e.Receiver + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *DeliveryError) Unwrap() error { return e.Err }

// RetryAfter reports whether err, the outcome of a Notify, should be tried
// again, and how long to wait at least before doing so. nil is not retried.
// A *DeliveryError anywhere in err's chain decides; any other error (one a
// Notifier outside this package made up) is retried, since an alert dropped
// for an unclassified error is worse than one tried again.
func RetryAfter(err error) (retry bool, after time.Duration) {
	if err == nil {
		return false, 0
	}
	if de, ok := errors.AsType[*DeliveryError](err); ok {
		return de.Retryable, de.RetryAfter
	}
	return true, 0
}

// withDefaultTimeout bounds ctx by DefaultTimeout unless it has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// httpResult is what postJSON read of a receiver's answer.
type httpResult struct {
	status int
	header http.Header
	body   []byte
}

// postJSON POSTs body to target as JSON with extra headers, and returns the
// answer with its body read up to MaxResponseBody. An error is a
// *DeliveryError for a request that got no answer; it never holds the URL.
func postJSON(ctx context.Context, hc *http.Client, receiver, target string, body []byte, header http.Header) (httpResult, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return httpResult{}, &DeliveryError{Receiver: receiver, Err: errors.New("cannot make the request")}
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	resp, err := hc.Do(req)
	if err != nil {
		// *url.Error names the URL, which may be the secret (Slack's).
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return httpResult{}, &DeliveryError{Receiver: receiver, Retryable: true, Err: fmt.Errorf("POST: %w", err)}
	}
	defer resp.Body.Close()
	// A body cut short leaves what was read: the status decides, and an
	// answer that needs its body ("ok") will not match.
	data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	return httpResult{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// httpError classifies an answer that is not a success: 429 and 5xx are
// worth retrying (after Retry-After, if given), any other status is not.
func httpError(receiver string, r httpResult) *DeliveryError {
	retryable := r.status == http.StatusTooManyRequests || r.status >= 500
	e := &DeliveryError{Receiver: receiver, Status: r.status, Retryable: retryable,
		Err: fmt.Errorf("HTTP %d %s%s", r.status, http.StatusText(r.status), snippet(r.body))}
	if retryable {
		e.RetryAfter = parseRetryAfter(r.header.Get("Retry-After"), time.Now())
	}
	return e
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date
// (RFC 9110 10.2.3). Anything else, or a time past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil {
		return min(max(at.Sub(now), 0), MaxRetryAfter)
	}
	return 0
}

// snippet is the start of a receiver's answer, on one line, for an error
// message ("" if there is none).
func snippet(body []byte) string {
	const most = 256
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(body), "?")), " ")
	if s == "" {
		return ""
	}
	return ": " + truncate(s, most)
}

// truncate cuts s to at most n bytes without splitting a character, marking
// a cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// checkURL validates a receiver's endpoint: an absolute http or https URL.
// Its error does not repeat the URL, which may be a secret.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("not an http or https URL")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	return nil
}

// httpClient is hc, or a plain client if hc is nil (Notify bounds every
// request by its context, DefaultTimeout at most without a deadline).
func httpClient(hc *http.Client) *http.Client {
	if hc == nil {
		return &http.Client{}
	}
	return hc
}

// where names what an alert is about, for a title: "on node-2", "in roll
// r-7", or "" for a cluster-wide alert.
func where(a schema.Alert) string {
	switch {
	case a.NodeID != "":
		return " on " + a.NodeID
	case a.RollID != "":
		return " in roll " + a.RollID
	}
	return ""
}

// title is the one-line summary of n: "[CRITICAL] restart_failed on node-2",
// "[RESOLVED] restart_failed on node-2", prefixed "[TEST] " for a test.
func title(n Notification) string {
	tag := strings.ToUpper(string(n.Alert.Severity))
	if n.Resolved() {
		tag = "RESOLVED"
	}
	t := "[" + tag + "] " + n.Alert.Kind + where(n.Alert)
	if n.Test {
		t = "[TEST] " + t
	}
	return t
}

// detailLines is an alert's details as "key: value" lines, sorted by key;
// a value that is not a string is written as JSON.
func detailLines(d map[string]any) []string {
	lines := make([]string, 0, len(d))
	for _, k := range slices.Sorted(maps.Keys(d)) {
		v, ok := d[k].(string)
		if !ok {
			b, err := json.Marshal(d[k])
			if err != nil {
				b = []byte(fmt.Sprint(d[k]))
			}
			v = string(b)
		}
		lines = append(lines, k+": "+v)
	}
	return lines
}

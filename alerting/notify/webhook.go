package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/restartcoord/restartcoord/schema"
)

// Standard Webhooks headers (https://www.standardwebhooks.com).
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// WebhookSecretPrefix marks a base64 Standard Webhooks secret.
const WebhookSecretPrefix = "whsec_"

// WebhookTolerance is how far a webhook-timestamp may be from the
// receiver's clock before the receiver should refuse the request as a
// replay (VerifyWebhook leaves this check to its caller).
const WebhookTolerance = 5 * time.Minute

// ErrWebhookSignature is VerifyWebhook's error for a signature that does not
// match the body (or a header that holds no v1 signature).
var ErrWebhookSignature = errors.New("notify: webhook signature does not match")

// Webhook posts notifications as JSON to a URL, signed the Standard
// Webhooks way when it has a key.
type Webhook struct {
	name, url string
	key       []byte
	hc        *http.Client
}

// WebhookPayload is the body of every webhook request: one JSON object per
// notification.
type WebhookPayload struct {
	Type        string          `json:"type"` // "alert.firing" or "alert.resolved"
	ID          string          `json:"id"`   // the notification id, as in webhook-id
	Kind        string          `json:"kind"`
	Severity    schema.Severity `json:"severity"`
	Status      string          `json:"status"` // firing or resolved
	NodeID      string          `json:"node_id"`
	RollID      string          `json:"roll_id"`
	Summary     string          `json:"summary"` // the alert's message
	Title       string          `json:"title"`   // "[CRITICAL] restart_failed on node-2"
	Fingerprint string          `json:"fingerprint"`
	AlertID     string          `json:"alert_id"`
	Details     map[string]any  `json:"details"`
	Timestamp   time.Time       `json:"timestamp"`
	FirstSeen   time.Time       `json:"first_seen"`
	Count       int             `json:"count"`
	Test        bool            `json:"test"`
	Source      string          `json:"source,omitempty"`
}

// NewWebhook is the receiver name posting to url, signing with key (from
// WebhookKey; empty: requests go unsigned, without webhook-signature). hc
// nil is a default client. It returns an error for a bad URL.
func NewWebhook(name, url string, key []byte, hc *http.Client) (*Webhook, error) {
	if name == "" {
		return nil, errors.New("webhook receiver: no name")
	}
	if err := checkURL(url); err != nil {
		return nil, fmt.Errorf("webhook receiver %s: %w", name, err)
	}
	return &Webhook{name: name, url: url, key: bytes.Clone(key), hc: httpClient(hc)}, nil
}

// Name is the receiver's name.
func (w *Webhook) Name() string { return w.name }

// Type is TypeWebhook.
func (w *Webhook) Type() string { return TypeWebhook }

// Notify posts n as a WebhookPayload with webhook-id (n.ID, the same on
// every try), webhook-timestamp (now) and webhook-signature. Any 2xx is
// success; otherwise a *DeliveryError (429 and 5xx retryable, other 4xx
// not, nor a notification without an id).
func (w *Webhook) Notify(ctx context.Context, n Notification) error {
	if n.ID == "" || strings.ContainsFunc(n.ID, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return &DeliveryError{Receiver: w.name, Err: fmt.Errorf("notification id %q cannot be a webhook-id", n.ID)}
	}
	body, err := json.Marshal(webhookPayloadOf(n))
	if err != nil {
		return &DeliveryError{Receiver: w.name, Err: fmt.Errorf("encoding the payload: %w", err)}
	}
	ts := time.Now().Unix()
	h := http.Header{}
	h.Set(HeaderWebhookID, n.ID)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	if len(w.key) > 0 {
		h.Set(HeaderWebhookSignature, SignWebhook(w.key, n.ID, ts, body))
	}
	r, err := postJSON(ctx, w.hc, w.name, w.url, body, h)
	if err != nil {
		return err
	}
	if r.status/100 != 2 {
		return httpError(w.name, r)
	}
	return nil
}

func webhookPayloadOf(n Notification) WebhookPayload {
	a := n.Alert
	details := a.Details
	if details == nil {
		details = map[string]any{}
	}
	return WebhookPayload{Type: "alert." + n.Status, ID: n.ID, Kind: a.Kind, Severity: a.Severity, Status: n.Status,
		NodeID: a.NodeID, RollID: a.RollID, Summary: a.Message, Title: title(n), Fingerprint: n.Fingerprint,
		AlertID: a.AlertID, Details: details, Timestamp: a.Timestamp, FirstSeen: n.FirstSeen, Count: n.Count,
		Test: n.Test, Source: a.Source}
}

// WebhookKey reads a webhook signing key from a secret file's bytes:
// surrounding whitespace trimmed, then the base64 after "whsec_" if it
// starts so, else the bytes themselves. It returns an error for an empty
// key or bad base64 (never repeating the secret).
func WebhookKey(secretFileBytes []byte) ([]byte, error) {
	s := bytes.TrimSpace(secretFileBytes)
	rest, prefixed := bytes.CutPrefix(s, []byte(WebhookSecretPrefix))
	if !prefixed {
		if len(s) == 0 {
			return nil, errors.New("webhook secret is empty")
		}
		return bytes.Clone(s), nil
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(rest)))
	n, err := base64.StdEncoding.Decode(key, rest)
	if err != nil {
		return nil, errors.New("webhook secret starts with whsec_ but the rest is not base64")
	}
	if n == 0 {
		return nil, errors.New("webhook secret is empty after whsec_")
	}
	return key[:n], nil
}

// SignWebhook is the webhook-signature of body sent with id at timestamp
// (unix seconds): "v1," and the base64 HMAC-SHA256, keyed with key, of
// "<id>.<timestamp>.<body>".
func SignWebhook(key []byte, id string, timestamp int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(webhookMAC(key, id, strconv.FormatInt(timestamp, 10), body))
}

// VerifyWebhook checks a request's webhook-signature header (a
// space-separated list; one v1 signature that matches is enough) against
// its webhook-id, webhook-timestamp and raw body. It returns
// ErrWebhookSignature for no match, and an error for an empty key or a
// timestamp that is not unix seconds. It does not judge the timestamp's age:
// a receiver should also refuse one more than WebhookTolerance from its
// clock.
func VerifyWebhook(key []byte, id, timestamp, signature string, body []byte) error {
	if len(key) == 0 {
		return errors.New("notify: no webhook key to verify with")
	}
	if _, err := strconv.ParseInt(timestamp, 10, 64); err != nil {
		return fmt.Errorf("notify: webhook-timestamp %q is not unix seconds", timestamp)
	}
	want := webhookMAC(key, id, timestamp, body)
	for _, sig := range strings.Fields(signature) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		if !ok {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrWebhookSignature
}

func webhookMAC(key []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return m.Sum(nil)
}

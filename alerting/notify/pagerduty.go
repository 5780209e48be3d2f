package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/restartcoord/restartcoord/schema"
)

// PagerDutyURL is the Events API v2 endpoint used when none is configured.
const PagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// PagerDuty limits (Events API v2).
const (
	pagerDutyMaxDedupKey = 255
	pagerDutyMaxSummary  = 1024
	dedupKeyPrefix       = "restartcoord/"
)

// PagerDuty sends notifications as PagerDuty Events API v2 alert events: a
// firing group triggers (or adds to) the alert with its dedup key, a
// resolved group resolves it.
type PagerDuty struct {
	name, url, routingKey string
	hc                    *http.Client
}

// NewPagerDuty is the receiver name sending to the Events API v2 endpoint
// url (PagerDutyURL if empty) with routingKey, the integration key. hc nil
// is a default client. It returns an error for a bad URL or an empty or
// malformed routing key (never repeating the key).
func NewPagerDuty(name, url, routingKey string, hc *http.Client) (*PagerDuty, error) {
	if name == "" {
		return nil, errors.New("pagerduty receiver: no name")
	}
	if url == "" {
		url = PagerDutyURL
	}
	if err := checkURL(url); err != nil {
		return nil, fmt.Errorf("pagerduty receiver %s: %w", name, err)
	}
	if routingKey == "" {
		return nil, fmt.Errorf("pagerduty receiver %s: no routing key", name)
	}
	if strings.ContainsFunc(routingKey, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return nil, fmt.Errorf("pagerduty receiver %s: the routing key holds spaces or control characters", name)
	}
	return &PagerDuty{name: name, url: url, routingKey: routingKey, hc: httpClient(hc)}, nil
}

// Name is the receiver's name.
func (p *PagerDuty) Name() string { return p.name }

// Type is TypePagerDuty.
func (p *PagerDuty) Type() string { return TypePagerDuty }

// Notify sends one event: trigger for a firing group, resolve for a
// resolved one, both with DedupKey(n.Fingerprint). PagerDuty accepts it with
// 202; anything else is a *DeliveryError (400 not retryable, 429 and 5xx
// retryable).
func (p *PagerDuty) Notify(ctx context.Context, n Notification) error {
	body, err := json.Marshal(pagerDutyEventOf(p.routingKey, n))
	if err != nil {
		return &DeliveryError{Receiver: p.name, Err: fmt.Errorf("encoding the event: %w", err)}
	}
	r, err := postJSON(ctx, p.hc, p.name, p.url, body, nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusAccepted {
		return httpError(p.name, r)
	}
	return nil
}

// DedupKey is the PagerDuty dedup_key of a group: "restartcoord/" and its
// fingerprint, or of the fingerprint's SHA-256 when that would pass
// PagerDuty's 255 characters.
func DedupKey(fingerprint string) string {
	k := dedupKeyPrefix + fingerprint
	if len(k) <= pagerDutyMaxDedupKey {
		return k
	}
	sum := sha256.Sum256([]byte(fingerprint))
	return dedupKeyPrefix + "sha256:" + hex.EncodeToString(sum[:])
}

// pagerDutyEvent is an Events API v2 alert event.
type pagerDutyEvent struct {
	RoutingKey  string            `json:"routing_key"`
	EventAction string            `json:"event_action"`
	DedupKey    string            `json:"dedup_key"`
	Client      string            `json:"client,omitempty"`
	Payload     *pagerDutyPayload `json:"payload,omitempty"`
}

type pagerDutyPayload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

func pagerDutyEventOf(routingKey string, n Notification) pagerDutyEvent {
	ev := pagerDutyEvent{RoutingKey: routingKey, EventAction: "trigger", DedupKey: DedupKey(n.Fingerprint),
		Client: UserAgent}
	if n.Resolved() {
		ev.EventAction = "resolve"
		return ev
	}
	a := n.Alert
	summary := title(n)
	if a.Message != "" {
		summary += ": " + a.Message
	}
	ev.Payload = &pagerDutyPayload{
		Summary:       truncate(summary, pagerDutyMaxSummary),
		Source:        pagerDutySource(a),
		Severity:      pagerDutySeverity(a.Severity),
		Component:     "restartcoord",
		Group:         a.RollID,
		Class:         a.Kind,
		CustomDetails: pagerDutyDetails(n),
	}
	if !a.Timestamp.IsZero() {
		ev.Payload.Timestamp = a.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return ev
}

// pagerDutySource is the affected system: the node, else the coordinator
// that raised the alert, else restartcoord itself.
func pagerDutySource(a schema.Alert) string {
	switch {
	case a.NodeID != "":
		return a.NodeID
	case a.Source != "":
		return a.Source
	}
	return "restartcoord"
}

// pagerDutySeverity maps ours onto PagerDuty's critical, error, warning,
// info (error unused); an unknown one is warning, so it still pages.
func pagerDutySeverity(s schema.Severity) string {
	switch s {
	case schema.SeverityCritical:
		return "critical"
	case schema.SeverityInfo:
		return "info"
	}
	return "warning"
}

// pagerDutyDetails is the alert's details with what identifies it and its
// group beside them (ours win a name clash).
func pagerDutyDetails(n Notification) map[string]any {
	d := make(map[string]any, len(n.Alert.Details)+8)
	for k, v := range n.Alert.Details {
		d[k] = v
	}
	a := n.Alert
	d["message"] = a.Message
	d["kind"] = a.Kind
	d["alert_id"] = a.AlertID
	d["fingerprint"] = n.Fingerprint
	d["notification_id"] = n.ID
	d["count"] = n.Count
	if !n.FirstSeen.IsZero() {
		d["first_seen"] = n.FirstSeen.UTC().Format(time.RFC3339Nano)
	}
	if a.NodeID != "" {
		d["node_id"] = a.NodeID
	}
	if a.RollID != "" {
		d["roll_id"] = a.RollID
	}
	if n.Test {
		d["test"] = true
	}
	return d
}

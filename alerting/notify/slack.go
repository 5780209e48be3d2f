package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// Slack limits (Block Kit): a section's text, a field's, a header's.
const (
	slackMaxText   = 3000
	slackMaxField  = 2000
	slackMaxHeader = 150
)

// Slack posts notifications to a Slack incoming webhook.
type Slack struct {
	name, url string // url is the secret
	hc        *http.Client
}

// NewSlack is the receiver name posting to the incoming webhook webhookURL
// (a secret: it is never logged nor put in an error). hc nil is a default
// client. It returns an error for a URL that is not an absolute http(s) one.
func NewSlack(name, webhookURL string, hc *http.Client) (*Slack, error) {
	if name == "" {
		return nil, errors.New("slack receiver: no name")
	}
	if webhookURL == "" {
		return nil, fmt.Errorf("slack receiver %s: no webhook URL", name)
	}
	if err := checkURL(webhookURL); err != nil {
		return nil, fmt.Errorf("slack receiver %s: webhook %w", name, err)
	}
	return &Slack{name: name, url: webhookURL, hc: httpClient(hc)}, nil
}

// Name is the receiver's name.
func (s *Slack) Name() string { return s.name }

// Type is TypeSlack.
func (s *Slack) Type() string { return TypeSlack }

// Notify posts one message. Slack accepts it with 200 and the body "ok";
// anything else is a *DeliveryError (429, with Retry-After, and 5xx
// retryable; 4xx such as invalid_payload or no_service not).
func (s *Slack) Notify(ctx context.Context, n Notification) error {
	body, err := json.Marshal(slackMessageOf(n))
	if err != nil {
		return &DeliveryError{Receiver: s.name, Err: fmt.Errorf("encoding the message: %w", err)}
	}
	r, err := postJSON(ctx, s.hc, s.name, s.url, body, nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return httpError(s.name, r)
	}
	if strings.TrimSpace(string(r.body)) != "ok" {
		return &DeliveryError{Receiver: s.name, Status: r.status,
			Err: fmt.Errorf("HTTP 200 without ok%s", snippet(r.body))}
	}
	return nil
}

type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackText struct {
	Type string `json:"type"` // plain_text or mrkdwn
	Text string `json:"text"`
}

// slackMessageOf is n as a message: text (the notification, shown where
// blocks are not: push notifications, old clients) and blocks (a header,
// the message, the facts, the ids).
func slackMessageOf(n Notification) slackMessage {
	a := n.Alert
	text := slackIcon(n) + " " + title(n)
	if a.Message != "" {
		text += ": " + a.Message
	}
	fields := []slackText{
		slackField("Severity", string(a.Severity)),
		slackField("Kind", a.Kind),
		slackField("Status", strings.ToUpper(n.Status)),
		slackField("Count", strconv.Itoa(n.Count)),
	}
	if a.NodeID != "" {
		fields = append(fields, slackField("Node", a.NodeID))
	}
	if a.RollID != "" {
		fields = append(fields, slackField("Roll", a.RollID))
	}
	if !n.FirstSeen.IsZero() {
		fields = append(fields, slackField("First seen", n.FirstSeen.UTC().Format(time.RFC3339)))
	}
	if len(a.Details) > 0 {
		fields = append(fields, slackField("Details", strings.Join(detailLines(a.Details), "\n")))
	}
	ids := "fingerprint " + n.Fingerprint + " · alert " + a.AlertID + " · notification " + n.ID
	return slackMessage{
		Text: truncate(slackEscape(text), slackMaxText),
		Blocks: []slackBlock{
			{Type: "header", Text: &slackText{Type: "plain_text", Text: truncate(title(n), slackMaxHeader)}},
			{Type: "section", Text: ptr(mrkdwn(truncate(slackEscape(orDash(a.Message)), slackMaxText)))},
			{Type: "section", Fields: fields},
			{Type: "context", Elements: []slackText{mrkdwn(truncate(slackEscape(ids), slackMaxText))}},
		},
	}
}

// mrkdwn is a mrkdwn text object (escape user text before).
func mrkdwn(s string) slackText { return slackText{Type: "mrkdwn", Text: s} }

// slackField is a field: its label in bold over its value.
func slackField(label, value string) slackText {
	return mrkdwn(truncate("*"+label+"*\n"+slackEscape(value), slackMaxField))
}

func ptr[T any](v T) *T { return &v }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// slackEscape escapes the three characters Slack's mrkdwn gives a meaning.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace

// slackIcon marks a message's severity at a glance.
func slackIcon(n Notification) string {
	switch {
	case n.Resolved():
		return ":white_check_mark:"
	case n.Alert.Severity == schema.SeverityCritical:
		return ":red_circle:"
	case n.Alert.Severity == schema.SeverityWarning:
		return ":warning:"
	}
	return ":information_source:"
}

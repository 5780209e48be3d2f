// Package notifytest holds fakes of the services package notify delivers
// to: PagerDuty's Events API v2, a Slack incoming webhook, a Standard
// Webhooks receiver and an SMTP server. Each is a real protocol server on
// loopback that checks what it is sent the way the service would, records
// what it accepted, and can be told to fail; each is safe for concurrent use
// and shuts down with the test. They are for tests, here and in other
// packages, not a mock of any library.
package notifytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
)

// maxBody bounds what a fake reads of a request (PagerDuty's own limit).
const maxBody = 512 << 10

// recorder is what every fake shares: the events it accepted, and the
// failures it was told to answer with.
type recorder[E any] struct {
	mu         sync.Mutex
	events     []E
	changed    chan struct{} // closed and replaced when events grows
	requests   int
	failN      int
	failStatus int
	retryAfter string
	down       bool
}

func newRecorder[E any]() *recorder[E] { return &recorder[E]{changed: make(chan struct{})} }

func (r *recorder[E]) add(e E) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder[E]) snapshot() []E {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder[E]) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func (r *recorder[E]) failNext(n, status int, retryAfter string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failN, r.failStatus, r.retryAfter = n, status, retryAfter
}

func (r *recorder[E]) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// fault counts a request and says whether it is to fail, with what.
func (r *recorder[E]) fault() (status int, retryAfter string, fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	switch {
	case r.down:
		return http.StatusServiceUnavailable, "", true
	case r.failN > 0:
		r.failN--
		return r.failStatus, r.retryAfter, true
	}
	return 0, "", false
}

// waitFor waits until cond holds of the events (checked on every new one),
// failing t after timeout. Call it from the test's goroutine.
func (r *recorder[E]) waitFor(t testing.TB, cond func([]E) bool, timeout time.Duration) []E {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		events, changed := slices.Clone(r.events), r.changed
		r.mu.Unlock()
		if cond(events) {
			return events
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("notifytest: condition not met within %v (%d events recorded)", timeout, len(events))
			return nil
		}
	}
}

// serveFault answers a request the fake was told to fail, and reports
// whether it did.
func serveFault[E any](w http.ResponseWriter, r *recorder[E], body func(status int) string) bool {
	status, retryAfter, fail := r.fault()
	if !fail {
		return false
	}
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, body(status))
	return true
}

// readJSONRequest checks a request is a POST of JSON and returns its body,
// or answers it with an error (and returns ok false).
func readJSONRequest(w http.ResponseWriter, req *http.Request) (body []byte, ok bool) {
	if req.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil, false
	}
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "content type is not application/json", http.StatusBadRequest)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBody))
	if err != nil {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	return body, true
}

// decodeOne decodes exactly one JSON value from body into v, refusing
// unknown fields if strict.
func decodeOne(body []byte, v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one JSON value")
	}
	return nil
}

func newServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// PagerDutyEvent is one event the PagerDuty fake accepted.
type PagerDutyEvent struct {
	RoutingKey  string            `json:"routing_key"`
	EventAction string            `json:"event_action"`
	DedupKey    string            `json:"dedup_key"`
	Client      string            `json:"client"`
	ClientURL   string            `json:"client_url"`
	Payload     *PagerDutyPayload `json:"payload"`
	Images      json.RawMessage   `json:"images"`
	Links       json.RawMessage   `json:"links"`
	Header      http.Header       `json:"-"` // the request's
}

// PagerDutyPayload is a trigger's payload.
type PagerDutyPayload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp"`
	Component     string         `json:"component"`
	Group         string         `json:"group"`
	Class         string         `json:"class"`
	CustomDetails map[string]any `json:"custom_details"`
}

// PagerDutyFake is PagerDuty's Events API v2 (POST /v2/enqueue): it
// validates each event as PagerDuty documents it, answers 202 with the
// dedup_key, or 400 with the problems, and keeps the alerts' state.
type PagerDutyFake struct {
	srv  *httptest.Server
	log  *recorder[PagerDutyEvent]
	mu   sync.Mutex
	open map[string]bool // dedup_key → triggered and not resolved
}

// NewPagerDuty starts a PagerDuty fake, stopped when t ends.
func NewPagerDuty(t testing.TB) *PagerDutyFake {
	f := &PagerDutyFake{log: newRecorder[PagerDutyEvent](), open: map[string]bool{}}
	f.srv = newServer(t, f.serve)
	return f
}

// URL is the enqueue endpoint, for notify.NewPagerDuty.
func (f *PagerDutyFake) URL() string { return f.srv.URL + "/v2/enqueue" }

// Events are the events accepted so far, oldest first.
func (f *PagerDutyFake) Events() []PagerDutyEvent { return f.log.snapshot() }

// WaitFor waits until cond holds of the accepted events, failing t after
// timeout; it returns them.
func (f *PagerDutyFake) WaitFor(t testing.TB, cond func([]PagerDutyEvent) bool, timeout time.Duration) []PagerDutyEvent {
	t.Helper()
	return f.log.waitFor(t, cond, timeout)
}

// Requests is how many requests reached the fake, failed ones included.
func (f *PagerDutyFake) Requests() int { return f.log.count() }

// FailNext answers the next n requests with status (and Retry-After, if
// not empty) without looking at them.
func (f *PagerDutyFake) FailNext(n, status int, retryAfter string) {
	f.log.failNext(n, status, retryAfter)
}

// SetDown makes the fake answer every request 503 (true) or not.
func (f *PagerDutyFake) SetDown(down bool) { f.log.setDown(down) }

// Open lists the dedup keys of alerts triggered and not resolved, sorted.
func (f *PagerDutyFake) Open() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k, open := range f.open {
		if open {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func (f *PagerDutyFake) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v2/enqueue" {
		http.NotFound(w, req)
		return
	}
	if serveFault(w, f.log, func(status int) string { return http.StatusText(status) }) {
		return
	}
	body, ok := readJSONRequest(w, req)
	if !ok {
		return
	}
	var ev PagerDutyEvent
	var problems []string
	if err := decodeOne(body, &ev, true); err != nil {
		problems = append(problems, "invalid JSON: "+err.Error())
	} else {
		problems = validPagerDutyEvent(ev)
	}
	w.Header().Set("Content-Type", "application/json")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"status": "invalid event", "message": "Event object is invalid",
			"errors": problems})
		return
	}
	if ev.DedupKey == "" {
		ev.DedupKey = fmt.Sprintf("generated-%d", time.Now().UnixNano())
	}
	ev.Header = req.Header.Clone()
	f.mu.Lock()
	switch ev.EventAction {
	case "trigger":
		f.open[ev.DedupKey] = true
	case "resolve":
		delete(f.open, ev.DedupKey)
	}
	f.mu.Unlock()
	f.log.add(ev)
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(map[string]string{"status": "success", "message": "Event processed",
		"dedup_key": ev.DedupKey})
}

// validPagerDutyEvent lists what PagerDuty would refuse in ev.
func validPagerDutyEvent(ev PagerDutyEvent) []string {
	var p []string
	if ev.RoutingKey == "" {
		p = append(p, "'routing_key' is missing or blank")
	}
	switch ev.EventAction {
	case "trigger":
	case "acknowledge", "resolve":
		if ev.DedupKey == "" {
			p = append(p, "'dedup_key' is missing or blank")
		}
	default:
		p = append(p, fmt.Sprintf("'event_action' %q is not trigger, acknowledge or resolve", ev.EventAction))
	}
	if len(ev.DedupKey) > 255 {
		p = append(p, "'dedup_key' is longer than 255 characters")
	}
	if ev.EventAction != "trigger" {
		return p
	}
	if ev.Payload == nil {
		return append(p, "'payload' is missing")
	}
	pl := ev.Payload
	if strings.TrimSpace(pl.Summary) == "" {
		p = append(p, "'payload.summary' is missing or blank")
	}
	if len(pl.Summary) > 1024 {
		p = append(p, "'payload.summary' is longer than 1024 characters")
	}
	if strings.TrimSpace(pl.Source) == "" {
		p = append(p, "'payload.source' is missing or blank")
	}
	if !slices.Contains([]string{"critical", "error", "warning", "info"}, pl.Severity) {
		p = append(p, fmt.Sprintf("'payload.severity' %q is not critical, error, warning or info", pl.Severity))
	}
	if pl.Timestamp != "" {
		if _, err := time.Parse(time.RFC3339Nano, pl.Timestamp); err != nil {
			p = append(p, "'payload.timestamp' is not an ISO 8601 timestamp")
		}
	}
	return p
}

// SlackMessage is one message the Slack fake accepted.
type SlackMessage struct {
	Text   string           `json:"text"`
	Blocks []map[string]any `json:"blocks"`
	Header http.Header      `json:"-"` // the request's
}

// SlackFake is a Slack incoming webhook: it answers 200 "ok" to a message
// with a text or blocks, 400 invalid_payload or no_text otherwise.
type SlackFake struct {
	srv *httptest.Server
	log *recorder[SlackMessage]
}

// NewSlack starts a Slack fake, stopped when t ends.
func NewSlack(t testing.TB) *SlackFake {
	f := &SlackFake{log: newRecorder[SlackMessage]()}
	f.srv = newServer(t, f.serve)
	return f
}

// URL is the webhook URL, for notify.NewSlack.
func (f *SlackFake) URL() string {
	return f.srv.URL + "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
}

// Messages are the messages accepted so far, oldest first.
func (f *SlackFake) Messages() []SlackMessage { return f.log.snapshot() }

// WaitFor waits until cond holds of the accepted messages, failing t after
// timeout; it returns them.
func (f *SlackFake) WaitFor(t testing.TB, cond func([]SlackMessage) bool, timeout time.Duration) []SlackMessage {
	t.Helper()
	return f.log.waitFor(t, cond, timeout)
}

// Requests is how many requests reached the fake, failed ones included.
func (f *SlackFake) Requests() int { return f.log.count() }

// FailNext answers the next n requests with status (and Retry-After, if
// not empty): 429 as Slack's rate limit does, with body rate_limited.
func (f *SlackFake) FailNext(n, status int, retryAfter string) { f.log.failNext(n, status, retryAfter) }

// SetDown makes the fake answer every request 503 (true) or not.
func (f *SlackFake) SetDown(down bool) { f.log.setDown(down) }

func (f *SlackFake) serve(w http.ResponseWriter, req *http.Request) {
	if !strings.HasPrefix(req.URL.Path, "/services/") {
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	if serveFault(w, f.log, slackFaultBody) {
		return
	}
	body, ok := readJSONRequest(w, req)
	if !ok {
		return
	}
	var m SlackMessage
	if err := decodeOne(body, &m, false); err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	if strings.TrimSpace(m.Text) == "" && len(m.Blocks) == 0 {
		http.Error(w, "no_text", http.StatusBadRequest)
		return
	}
	for _, b := range m.Blocks {
		if t, _ := b["type"].(string); t == "" {
			http.Error(w, "invalid_blocks", http.StatusBadRequest)
			return
		}
	}
	m.Header = req.Header.Clone()
	f.log.add(m)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

func slackFaultBody(status int) string {
	if status == http.StatusTooManyRequests {
		return "rate_limited"
	}
	return http.StatusText(status)
}

// WebhookEvent is one request the webhook fake accepted.
type WebhookEvent struct {
	ID        string                // webhook-id
	Timestamp int64                 // webhook-timestamp
	Payload   notify.WebhookPayload // the body, decoded
	Fields    map[string]any        // the body's top-level fields
	Raw       []byte                // the body as sent
	Header    http.Header           // the request's
}

// WebhookFake is a receiver of Standard Webhooks: it refuses (401) a
// request whose webhook-signature does not verify with its key or whose
// webhook-timestamp is more than notify.WebhookTolerance off, and (400) a
// body that is not one JSON object; it answers 200 otherwise.
type WebhookFake struct {
	srv *httptest.Server
	log *recorder[WebhookEvent]
	key []byte
}

// NewWebhook starts a webhook fake verifying with key (nil: signatures are
// not checked), stopped when t ends.
func NewWebhook(t testing.TB, key []byte) *WebhookFake {
	f := &WebhookFake{log: newRecorder[WebhookEvent](), key: bytes.Clone(key)}
	f.srv = newServer(t, f.serve)
	return f
}

// URL is the endpoint, for notify.NewWebhook.
func (f *WebhookFake) URL() string { return f.srv.URL + "/hooks/restartcoord" }

// Events are the requests accepted so far, oldest first.
func (f *WebhookFake) Events() []WebhookEvent { return f.log.snapshot() }

// WaitFor waits until cond holds of the accepted requests, failing t after
// timeout; it returns them.
func (f *WebhookFake) WaitFor(t testing.TB, cond func([]WebhookEvent) bool, timeout time.Duration) []WebhookEvent {
	t.Helper()
	return f.log.waitFor(t, cond, timeout)
}

// Requests is how many requests reached the fake, refused ones included.
func (f *WebhookFake) Requests() int { return f.log.count() }

// FailNext answers the next n requests with status (and Retry-After, if
// not empty) without looking at them.
func (f *WebhookFake) FailNext(n, status int, retryAfter string) {
	f.log.failNext(n, status, retryAfter)
}

// SetDown makes the fake answer every request 503 (true) or not.
func (f *WebhookFake) SetDown(down bool) { f.log.setDown(down) }

func (f *WebhookFake) serve(w http.ResponseWriter, req *http.Request) {
	if serveFault(w, f.log, func(status int) string { return http.StatusText(status) }) {
		return
	}
	body, ok := readJSONRequest(w, req)
	if !ok {
		return
	}
	id, ts := req.Header.Get(notify.HeaderWebhookID), req.Header.Get(notify.HeaderWebhookTimestamp)
	if id == "" || ts == "" {
		http.Error(w, "webhook-id or webhook-timestamp missing", http.StatusBadRequest)
		return
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		http.Error(w, "webhook-timestamp is not unix seconds", http.StatusBadRequest)
		return
	}
	if d := time.Since(time.Unix(sec, 0)); d > notify.WebhookTolerance || d < -notify.WebhookTolerance {
		http.Error(w, "webhook-timestamp too far from now", http.StatusUnauthorized)
		return
	}
	if f.key != nil {
		if err := notify.VerifyWebhook(f.key, id, ts, req.Header.Get(notify.HeaderWebhookSignature), body); err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
	}
	ev := WebhookEvent{ID: id, Timestamp: sec, Raw: body, Header: req.Header.Clone()}
	if err := decodeOne(body, &ev.Fields, false); err != nil || ev.Fields == nil {
		http.Error(w, "body is not one JSON object", http.StatusBadRequest)
		return
	}
	if err := json.Unmarshal(body, &ev.Payload); err != nil {
		http.Error(w, "body is not a notification: "+err.Error(), http.StatusBadRequest)
		return
	}
	f.log.add(ev)
	w.WriteHeader(http.StatusOK)
}

package alerting

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/restartcoord/restartcoord/schema"
)

// Receiver types.
const (
	TypePagerDuty = "pagerduty" // PagerDuty Events API v2
	TypeEmail     = "email"     // SMTP
	TypeSlack     = "slack"     // a Slack incoming webhook
	TypeWebhook   = "webhook"   // JSON POSTed to a URL, HMAC-signed when a secret is given
)

// ReceiverTypes lists every receiver type.
var ReceiverTypes = []string{TypePagerDuty, TypeEmail, TypeSlack, TypeWebhook}

// SMTP connection security (SMTP.TLS).
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, which must be offered (the default)
	TLSImplicit = "tls"      // TLS from the first byte (port 465)
	TLSNone     = "none"     // no encryption
)

// Defaults: Alertmanager's intervals, and PagerDuty's events endpoint.
const (
	DefaultGroupWait      = 30 * time.Second
	DefaultGroupInterval  = 5 * time.Minute
	DefaultRepeatInterval = 4 * time.Hour
	DefaultPagerDutyURL   = "https://events.pagerduty.com/v2/enqueue"
)

// MaxConfigSize bounds a configuration file: Parse rejects a larger one.
const MaxConfigSize = schema.MaxAlertsConfig // 1 MiB

// Duration is a time.Duration written in Go's syntax ("30s", "5m", "4h",
// "1h30m"). A bare number is rejected, not read as seconds or nanoseconds:
// "group_wait: 30" would be ambiguous.
type Duration time.Duration

// MarshalJSON writes d as a string such as "5m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string; it returns an error for a number
// or a string time.ParseDuration refuses.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration: write a number with a unit such as \"30s\", \"5m\" or \"4h\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: write a number with a unit such as \"30s\", \"5m\" or \"4h\"", s)
	}
	*d = Duration(v)
	return nil
}

// Config is the alert delivery configuration: where alerts go and how
// often. Secrets are never in it: a receiver names the file or environment
// variable that holds its secret, read by Receiver.Secret where it is used.
type Config struct {
	// GroupWait is how long a new condition waits before its first
	// notification, so that a flapping one is told once (0: 30s).
	GroupWait Duration `json:"group_wait,omitzero"`
	// GroupInterval is the least time between two notifications of one
	// condition, and the wait before its resolution is told (0: 5m).
	GroupInterval Duration `json:"group_interval,omitzero"`
	// RepeatInterval is how often a condition still firing is told again
	// (0: 4h).
	RepeatInterval Duration   `json:"repeat_interval,omitzero"`
	Receivers      []Receiver `json:"receivers,omitempty"`
	// Routes send an alert to the receivers of every route it matches (no
	// route: the shipped routing, restricted to the receivers declared).
	Routes []Route `json:"routes,omitempty"`
}

// Receiver is one destination. Which fields apply depends on Type (see
// docs/ALERTS.md); Validate rejects a field the type does not use.
type Receiver struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// URL is the PagerDuty events endpoint (default DefaultPagerDutyURL) or
	// the webhook's URL. A Slack webhook URL is a secret: URLFile or URLEnv.
	URL            string   `json:"url,omitempty"`
	URLFile        string   `json:"url_file,omitempty"`
	URLEnv         string   `json:"url_env,omitempty"`
	RoutingKeyFile string   `json:"routing_key_file,omitempty"` // PagerDuty integration key
	RoutingKeyEnv  string   `json:"routing_key_env,omitempty"`
	SecretFile     string   `json:"secret_file,omitempty"` // webhook signing secret (optional)
	SecretEnv      string   `json:"secret_env,omitempty"`
	SMTP           *SMTP    `json:"smtp,omitempty"`
	From           string   `json:"from,omitempty"`
	To             []string `json:"to,omitempty"`
}

// SMTP is an email receiver's server. The password is optional; when given,
// Username is required, and it is read from PasswordFile or PasswordEnv.
type SMTP struct {
	Host         string `json:"host"`
	Port         int    `json:"port,omitempty"` // 0: 587, 465 or 25 as TLS is starttls, tls or none
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	PasswordEnv  string `json:"password_env,omitempty"`
	TLS          string `json:"tls,omitempty"` // TLSStartTLS (default), TLSImplicit or TLSNone
}

// Route sends the alerts Match selects to Receivers (names).
type Route struct {
	Match     Match    `json:"match"`
	Receivers []string `json:"receivers"`
}

// Match selects alerts: by severity, by kind, or both (the empty Match
// selects every alert).
type Match struct {
	Severity schema.Severity `json:"severity,omitempty"`
	Kinds    []string        `json:"kinds,omitempty"`
}

// Matches reports whether m selects a.
func (m Match) Matches(a schema.Alert) bool {
	return (m.Severity == "" || a.Severity == m.Severity) && (len(m.Kinds) == 0 || slices.Contains(m.Kinds, a.Kind))
}

// seedRoutes is the shipped routing.
func seedRoutes() []Route {
	return []Route{
		{Match: Match{Severity: schema.SeverityCritical}, Receivers: []string{TypePagerDuty, TypeEmail}},
		{Match: Match{Severity: schema.SeverityWarning}, Receivers: []string{TypeSlack}},
		{Match: Match{Severity: schema.SeverityInfo}, Receivers: []string{TypeWebhook}},
	}
}

// Default is the shipped routing with Alertmanager's intervals and no
// receivers: critical alerts to receivers named pagerduty and email, warnings
// to slack, information to webhook. It does not pass Validate until those
// receivers are declared; until then ReceiversFor finds none.
func Default() Config {
	return Config{GroupWait: Duration(DefaultGroupWait), GroupInterval: Duration(DefaultGroupInterval),
		RepeatInterval: Duration(DefaultRepeatInterval), Routes: seedRoutes()}
}

// WebhookOnly is the quick start: one receiver named "webhook" of type
// webhook posting to url (signed with the secret in secretFile, when not
// empty; a relative path is made absolute from the working directory, as
// a command-line flag is read), and one route sending it every alert.
func WebhookOnly(url, secretFile string) Config {
	if secretFile != "" && !filepath.IsAbs(secretFile) {
		if abs, err := filepath.Abs(secretFile); err == nil {
			secretFile = abs
		}
	}
	c := Default()
	c.Receivers = []Receiver{{Name: TypeWebhook, Type: TypeWebhook, URL: url, SecretFile: secretFile}}
	c.Routes = []Route{{Receivers: []string{TypeWebhook}}}
	return c
}

// WithDefaults returns c with its gaps filled: a zero interval takes its
// default, no routes take the shipped routing (only its routes and receivers
// that c declares), a PagerDuty receiver without URL takes
// DefaultPagerDutyURL, an SMTP server without TLS takes starttls, and
// without port the usual one for its TLS (587 starttls, 465 tls, 25 none).
// c itself is not changed.
func (c Config) WithDefaults() Config {
	if c.GroupWait == 0 {
		c.GroupWait = Duration(DefaultGroupWait)
	}
	if c.GroupInterval == 0 {
		c.GroupInterval = Duration(DefaultGroupInterval)
	}
	if c.RepeatInterval == 0 {
		c.RepeatInterval = Duration(DefaultRepeatInterval)
	}
	c.Receivers = slices.Clone(c.Receivers)
	for i, r := range c.Receivers {
		if r.Type == TypePagerDuty && r.URL == "" {
			r.URL = DefaultPagerDutyURL
		}
		if r.SMTP != nil && (r.SMTP.TLS == "" || r.SMTP.Port == 0) {
			s := *r.SMTP
			if s.TLS == "" {
				s.TLS = TLSStartTLS
			}
			if s.Port == 0 {
				s.Port = map[string]int{TLSStartTLS: 587, TLSImplicit: 465, TLSNone: 25}[s.TLS]
			}
			r.SMTP = &s
		}
		c.Receivers[i] = r
	}
	if len(c.Routes) == 0 {
		c.Routes = nil
		for _, rt := range seedRoutes() {
			rt.Receivers = slices.DeleteFunc(rt.Receivers, func(n string) bool { return !c.declared(n) })
			if len(rt.Receivers) > 0 {
				c.Routes = append(c.Routes, rt)
			}
		}
	}
	return c
}

// declared reports whether c has a receiver named name.
func (c Config) declared(name string) bool {
	return slices.ContainsFunc(c.Receivers, func(r Receiver) bool { return r.Name == name })
}

// ReceiversFor names the receivers alert a goes to: those of every route it
// matches, in route order, each once. A route's receiver that c does not
// declare is left out (Validate rejects it; Default has none).
func (c Config) ReceiversFor(a schema.Alert) []string {
	var out []string
	for _, rt := range c.Routes {
		if !rt.Match.Matches(a) {
			continue
		}
		for _, n := range rt.Receivers {
			if !slices.Contains(out, n) && c.declared(n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// Parse reads a configuration (YAML or JSON) strictly: a field it does not
// know is an error (so is a secret written inline, such as routing_key:).
// It applies WithDefaults and returns every problem Validate finds, joined,
// each a *FieldError. An interval written as 0 is an error (0 would not mean
// "no wait" but the default). A file over MaxConfigSize is refused unread.
func Parse(data []byte) (Config, error) {
	if len(data) > MaxConfigSize {
		return Config{}, fmt.Errorf("alert configuration is %d bytes: at most %d (1 MiB)", len(data), MaxConfigSize)
	}
	// The intervals first, so that their errors name them.
	var top map[string]json.RawMessage
	if err := yaml.Unmarshal(data, &top); err != nil {
		if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return Config{}, errors.New("alert configuration: the top level must be a mapping (group_wait:, receivers:, routes: ...)")
		}
		return Config{}, fmt.Errorf("alert configuration: %s", innermost(err))
	}
	var p problems
	for _, field := range []string{"group_wait", "group_interval", "repeat_interval"} {
		raw, ok := top[field]
		if !ok {
			continue
		}
		var d Duration
		if err := d.UnmarshalJSON(raw); err != nil {
			p.add(field, "%v", err)
		} else if d == 0 {
			p.add(field, "0 would mean the default; leave it out for the default, or give at least 1s")
		}
	}
	if len(p) > 0 {
		return Config{}, errors.Join(p...)
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("alert configuration: %s%s", innermost(err), inlineSecretHint(err))
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// innermost is the message of the error err wraps last, without the JSON
// decoder's prefix: YAML is converted to JSON before it is decoded, which
// the reader of the message need not know.
func innermost(err error) string {
	for u := errors.Unwrap(err); u != nil; u = errors.Unwrap(err) {
		err = u
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// inlineSecretHint explains an unknown field that looks like a secret
// written inline.
func inlineSecretHint(err error) string {
	const never = " (secrets are never written in the configuration: "
	for _, f := range []string{"routing_key", "password", "secret"} {
		if strings.Contains(err.Error(), fmt.Sprintf("unknown field %q", f)) {
			return fmt.Sprintf(never+"give %[1]s_file or %[1]s_env)", f)
		}
	}
	for _, f := range []string{"token", "key", "api_key", "webhook_url", "slack_url"} {
		if strings.Contains(err.Error(), fmt.Sprintf("unknown field %q", f)) {
			return never + "each receiver type names a *_file or *_env field for its secret, docs/ALERTS.md)"
		}
	}
	return ""
}

// FieldError is one problem of a configuration, at Field (such as
// "receivers[1] (slack): url_file").
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

var (
	nameRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	envRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// maxProblems bounds the problems Validate reports (a 1 MiB file could hold
// tens of thousands, too many to read or to send in a reply).
const maxProblems = 100

// problems collects FieldErrors.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

// Validate checks c as it will be used (after WithDefaults) and returns
// every problem at once, joined, each a *FieldError naming where it is:
// names, types, the fields each type needs and refuses, secret references
// (exactly one of file and environment variable where a secret is required,
// at most one where it is optional; never their content), URLs, email
// addresses, routes and intervals. It reads no file and no environment.
func (c Config) Validate() error {
	var p problems
	if c.GroupWait < 0 {
		p.add("group_wait", "must not be negative, got %v", time.Duration(c.GroupWait))
	}
	if c.GroupInterval <= 0 {
		p.add("group_interval", "must be more than 0, got %v", time.Duration(c.GroupInterval))
	}
	if c.RepeatInterval < c.GroupInterval {
		p.add("repeat_interval", "must be at least group_interval (%v), got %v",
			time.Duration(c.GroupInterval), time.Duration(c.RepeatInterval))
	}
	seen := map[string]int{}
	for i, r := range c.Receivers {
		where := fmt.Sprintf("receivers[%d]", i)
		if r.Name != "" {
			where += " (" + r.Name + ")"
		}
		if j, dup := seen[r.Name]; dup && r.Name != "" {
			p.add(where+": name", "receivers[%d] has the same name", j)
		} else {
			seen[r.Name] = i
		}
		r.validate(where, &p)
	}
	for i, rt := range c.Routes {
		where := fmt.Sprintf("routes[%d]", i)
		rt.validate(where, c, &p)
	}
	if len(p) > maxProblems {
		more := len(p) - maxProblems
		p = append(p[:maxProblems], &FieldError{Field: "...", Problem: fmt.Sprintf("%d more problems not shown", more)})
	}
	return errors.Join(p...)
}

// allowed lists the fields each type uses (besides name and type).
var allowed = map[string][]string{
	TypePagerDuty: {"url", "routing_key_file", "routing_key_env"},
	TypeEmail:     {"smtp", "from", "to"},
	TypeSlack:     {"url_file", "url_env"},
	TypeWebhook:   {"url", "secret_file", "secret_env"},
}

func (r Receiver) validate(where string, p *problems) {
	if !nameRE.MatchString(r.Name) {
		p.add(where+": name", "must be 1..64 of a-z, 0-9, '_' and '-', got %q", r.Name)
	}
	use, ok := allowed[r.Type]
	if !ok {
		p.add(where+": type", "must be one of %s, got %q", strings.Join(ReceiverTypes, ", "), r.Type)
		return
	}
	fields := []struct {
		name string
		set  bool
	}{{"url", r.URL != ""}, {"url_file", r.URLFile != ""}, {"url_env", r.URLEnv != ""},
		{"routing_key_file", r.RoutingKeyFile != ""}, {"routing_key_env", r.RoutingKeyEnv != ""},
		{"secret_file", r.SecretFile != ""}, {"secret_env", r.SecretEnv != ""},
		{"smtp", r.SMTP != nil}, {"from", r.From != ""}, {"to", len(r.To) > 0}}
	for _, f := range fields {
		switch {
		case !f.set || slices.Contains(use, f.name):
		case r.Type == TypeSlack && f.name == "url":
			p.add(where+": url", "a Slack webhook URL is a secret: give url_file or url_env, never the URL inline")
		default:
			p.add(where+": "+f.name, "not used by type %s (it uses %s)", r.Type, strings.Join(use, ", "))
		}
	}
	if ref, ok := r.secretRef(); ok {
		ref.validate(where, p)
	}
	switch {
	case r.Type == TypeWebhook && r.URL == "":
		p.add(where+": url", "is required")
	case r.URL != "" && slices.Contains(use, "url"):
		checkURL(where+": url", r.URL, p)
	}
	if r.Type == TypeEmail {
		r.validateEmail(where, p)
	}
}

func (r Receiver) validateEmail(where string, p *problems) {
	if s := r.SMTP; s == nil {
		p.add(where+": smtp", "is required (at least smtp.host)")
	} else {
		if s.Host == "" {
			p.add(where+": smtp.host", "is required")
		}
		tlsOK := slices.Contains([]string{TLSStartTLS, TLSImplicit, TLSNone}, s.TLS)
		if !tlsOK {
			p.add(where+": smtp.tls", "must be starttls, tls or none, got %q", s.TLS)
		}
		if (s.Port < 1 || s.Port > 65535) && (tlsOK || s.Port != 0) {
			p.add(where+": smtp.port", "must be 1..65535 (or left out), got %d", s.Port)
		}
		hasPassword := s.PasswordFile != "" || s.PasswordEnv != ""
		if s.Username != "" && !hasPassword {
			p.add(where+": smtp.username", "needs smtp.password_file or smtp.password_env")
		}
		if hasPassword && s.Username == "" {
			p.add(where+": smtp.username", "is required with a password")
		}
	}
	if r.From == "" {
		p.add(where+": from", "is required")
	} else if _, err := mail.ParseAddress(r.From); err != nil {
		p.add(where+": from", "%q is not an email address: %v", r.From, err)
	}
	if len(r.To) == 0 {
		p.add(where+": to", "needs at least one address")
	}
	for i, to := range r.To {
		if _, err := mail.ParseAddress(to); err != nil {
			p.add(fmt.Sprintf("%s: to[%d]", where, i), "%q is not an email address: %v", to, err)
		}
	}
}

// checkURL requires an absolute http or https URL without credentials. The
// URL is not echoed: it may carry a token.
func checkURL(where, raw string, p *problems) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		p.add(where, "must be an absolute http or https URL")
	case u.User != nil:
		p.add(where, "must not hold a user or password (use the receiver's secret_file or secret_env)")
	}
}

// secretRef is where a receiver's secret is.
type secretRef struct {
	receiver, what      string // receiver name; "routing key", ...
	fileField, envField string
	file, env           string
	required            bool
}

// secretRef is r's secret reference, if its type has one.
func (r Receiver) secretRef() (secretRef, bool) {
	ref := secretRef{receiver: r.Name}
	switch r.Type {
	case TypePagerDuty:
		ref.what, ref.fileField, ref.envField = "routing key", "routing_key_file", "routing_key_env"
		ref.file, ref.env, ref.required = r.RoutingKeyFile, r.RoutingKeyEnv, true
	case TypeSlack:
		ref.what, ref.fileField, ref.envField = "Slack webhook URL", "url_file", "url_env"
		ref.file, ref.env, ref.required = r.URLFile, r.URLEnv, true
	case TypeWebhook:
		ref.what, ref.fileField, ref.envField = "signing secret", "secret_file", "secret_env"
		ref.file, ref.env = r.SecretFile, r.SecretEnv
	case TypeEmail:
		if r.SMTP == nil {
			return ref, false
		}
		ref.what, ref.fileField, ref.envField = "SMTP password", "smtp.password_file", "smtp.password_env"
		ref.file, ref.env = r.SMTP.PasswordFile, r.SMTP.PasswordEnv
	default:
		return ref, false
	}
	return ref, true
}

// validate checks the reference, never echoing its values (a secret pasted
// into a *_file or *_env field would otherwise be printed).
func (ref secretRef) validate(where string, p *problems) {
	switch {
	case ref.file != "" && ref.env != "":
		p.add(where+": "+ref.fileField, "give %s or %s, not both", ref.fileField, ref.envField)
	case ref.file == "" && ref.env == "" && ref.required:
		p.add(where+": "+ref.fileField, "%s or %s is required (the %s, never inline)", ref.fileField, ref.envField, ref.what)
	}
	if ref.file != "" && !filepath.IsAbs(ref.file) {
		p.add(where+": "+ref.fileField, "must be an absolute path")
	}
	if ref.env != "" && !envRE.MatchString(ref.env) {
		p.add(where+": "+ref.envField, "must name an environment variable (letters, digits and '_', not starting with a digit)")
	}
}

func (rt Route) validate(where string, c Config, p *problems) {
	if len(rt.Receivers) == 0 {
		p.add(where+": receivers", "needs at least one receiver")
	}
	for i, n := range rt.Receivers {
		if !c.declared(n) {
			p.add(fmt.Sprintf("%s: receivers[%d]", where, i), "no receiver is named %q", n)
		}
	}
	m := rt.Match
	if m.Severity != "" && !m.Severity.Valid() {
		p.add(where+": match.severity", "must be critical, warning or info, got %q", m.Severity)
	}
	for i, k := range m.Kinds {
		sev, known := schema.AlertKinds[k]
		switch {
		case !known:
			p.add(fmt.Sprintf("%s: match.kinds[%d]", where, i), "no alert kind %q", k)
		case m.Severity.Valid() && sev != m.Severity:
			p.add(fmt.Sprintf("%s: match.kinds[%d]", where, i), "%s is %s: never matched with severity %s", k, sev, m.Severity)
		}
	}
}

// Secret reads r's secret: the PagerDuty routing key, the Slack webhook URL,
// the webhook signing secret or the SMTP password, from its file (readFile,
// normally os.ReadFile) or environment variable (getenv, normally
// os.Getenv), with surrounding white space trimmed. It returns nil and no
// error when r's type has no secret or its optional secret is not
// configured. Its errors name the receiver and the file or variable, never
// the secret: a file that cannot be read (wrapping readFile's error), an
// empty file or variable, a Slack URL that is not an absolute http(s) URL.
func (r Receiver) Secret(getenv func(string) string, readFile func(string) ([]byte, error)) ([]byte, error) {
	ref, ok := r.secretRef()
	if !ok {
		return nil, nil
	}
	var v []byte
	var from string
	switch {
	case ref.file != "" && ref.env != "":
		return nil, fmt.Errorf("receiver %s: give %s or %s, not both", r.Name, ref.fileField, ref.envField)
	case ref.file != "":
		from = "file " + ref.file
		data, err := readFile(ref.file)
		if err != nil {
			return nil, fmt.Errorf("receiver %s: reading the %s: %w", r.Name, ref.what, err)
		}
		v = bytes.TrimSpace(data)
	case ref.env != "":
		from = "environment variable " + ref.env
		v = []byte(strings.TrimSpace(getenv(ref.env)))
	case ref.required:
		return nil, fmt.Errorf("receiver %s: the %s needs %s or %s", r.Name, ref.what, ref.fileField, ref.envField)
	default:
		return nil, nil
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("receiver %s: the %s: %s is empty or not set", r.Name, ref.what, from)
	}
	if r.Type == TypeSlack {
		var p problems
		if checkURL("", string(v), &p); len(p) > 0 {
			return nil, fmt.Errorf("receiver %s: the %s in %s is not an absolute http or https URL without credentials",
				r.Name, ref.what, from)
		}
	}
	return v, nil
}

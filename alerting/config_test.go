package alerting

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

const exampleConfigFile = "../deploy/alerts.example.yaml"

func TestParseExample(t *testing.T) {
	data, err := os.ReadFile(exampleConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(%s): %v", exampleConfigFile, err)
	}
	if got, want := len(c.Receivers), 4; got != want {
		t.Fatalf("got %d receivers, want %d", got, want)
	}
	if got, want := c.Receivers[0].URL, DefaultPagerDutyURL; got != want {
		t.Errorf("pagerduty url: got %q, want %q", got, want)
	}
	if got, want := c.Policy(), (Policy{30 * time.Second, 5 * time.Minute, 4 * time.Hour}); got != want {
		t.Errorf("policy: got %+v, want %+v", got, want)
	}
	if got, want := c.Routes, Default().Routes; !reflect.DeepEqual(got, want) {
		t.Errorf("routes: got %+v, want the shipped %+v", got, want)
	}
	// Every receiver's secret resolves from where it says.
	files := map[string]string{"/etc/restartcoord/pagerduty.key": "R0UTING\n",
		"/etc/restartcoord/slack-webhook-url": "https://hooks.slack.com/services/T/B/X\n",
		"/etc/restartcoord/webhook-secret":    "whsec_c2VjcmV0"}
	env := map[string]string{"RESTARTCOORD_SMTP_PASSWORD": "hunter2"}
	for _, r := range c.Receivers {
		if s, err := r.Secret(testGetenv(env), testReadFile(files)); err != nil || len(s) == 0 {
			t.Errorf("receiver %s: Secret() = %q, %v; want a secret", r.Name, s, err)
		}
	}
	doc, err := os.ReadFile("../docs/ALERTS.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), string(data)) {
		t.Errorf("docs/ALERTS.md does not hold %s verbatim: update the one from the other", exampleConfigFile)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`
receivers:
  - {name: webhook, type: webhook, url: "https://h.example/x"}
  - {name: pagerduty, type: pagerduty, routing_key_env: PD_KEY}
  - name: mail
    type: email
    smtp: {host: smtp.example.com, tls: tls}
    from: a@example.com
    to: [b@example.com]
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"group_wait", time.Duration(c.GroupWait), DefaultGroupWait},
		{"group_interval", time.Duration(c.GroupInterval), DefaultGroupInterval},
		{"repeat_interval", time.Duration(c.RepeatInterval), DefaultRepeatInterval},
		{"pagerduty url", c.Receivers[1].URL, DefaultPagerDutyURL},
		{"smtp port for tls", c.Receivers[2].SMTP.Port, 465},
		{"routes: the shipped ones with receivers declared", c.Routes, []Route{
			{Match: Match{Severity: schema.SeverityCritical}, Receivers: []string{"pagerduty"}},
			{Match: Match{Severity: schema.SeverityInfo}, Receivers: []string{"webhook"}}}},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	s := SMTP{Host: "h"}
	in := Config{Receivers: []Receiver{{Name: "e", Type: TypeEmail, SMTP: &s}}}
	out := in.WithDefaults()
	if s.TLS != "" || in.Receivers[0].SMTP != &s || out.Receivers[0].SMTP.TLS != TLSStartTLS || out.Receivers[0].SMTP.Port != 587 {
		t.Errorf("WithDefaults: got %+v (input now %+v), want starttls on 587 in a copy", *out.Receivers[0].SMTP, s)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []string // substrings of the error
	}{
		{"inline routing key", "receivers:\n  - {name: pd, type: pagerduty, routing_key: abc}\n",
			[]string{`unknown field "routing_key"`, "routing_key_file or routing_key_env"}},
		{"inline smtp password", "receivers:\n  - {name: e, type: email, smtp: {host: h, password: x}, from: a@b.c, to: [d@e.f]}\n",
			[]string{`unknown field "password"`, "password_file or password_env"}},
		{"unknown top-level field", "group_waits: 1s\n", []string{`unknown field "group_waits"`}},
		{"duplicate key", "group_wait: 1s\ngroup_wait: 2s\n", []string{"group_wait"}},
		{"bare number duration", "group_wait: 30\n", []string{"with a unit"}},
		{"bad duration", "group_wait: soon\n", []string{`"soon"`}},
		{"explicit zero interval", "group_wait: 0s\n", []string{"group_wait: 0 would mean the default"}},
		{"negative wait", "group_wait: -1s\n", []string{"group_wait: must not be negative"}},
		{"repeat below group interval", "group_interval: 10m\nrepeat_interval: 5m\n",
			[]string{"repeat_interval: must be at least group_interval (10m0s)"}},
		{"inline slack url", "receivers:\n  - {name: slack, type: slack, url: \"https://hooks.slack.com/services/SECRET\"}\n",
			[]string{"receivers[0] (slack): url: a Slack webhook URL is a secret", "receivers[0] (slack): url_file: url_file or url_env is required"}},
		{"slack both file and env", "receivers:\n  - {name: slack, type: slack, url_file: /a, url_env: A}\n",
			[]string{"url_file: give url_file or url_env, not both"}},
		{"relative secret file", "receivers:\n  - {name: w, type: webhook, url: \"https://h/x\", secret_file: key}\n",
			[]string{"receivers[0] (w): secret_file: must be an absolute path"}},
		{"secret pasted into env", "receivers:\n  - {name: pd, type: pagerduty, routing_key_env: \"R0UT!NG-KEY\"}\n",
			[]string{"routing_key_env: must name an environment variable"}},
		{"field of another type", "receivers:\n  - {name: w, type: webhook, url: \"https://h/x\", to: [a@b.c]}\n",
			[]string{"receivers[0] (w): to: not used by type webhook"}},
		{"email with a url", "receivers:\n  - {name: e, type: email, url: \"https://h/x\"}\n",
			[]string{"receivers[0] (e): url: not used by type email", "receivers[0] (e): smtp: is required"}},
		{"webhook without url", "receivers:\n  - {name: w, type: webhook}\n", []string{"receivers[0] (w): url: is required"}},
		{"relative url", "receivers:\n  - {name: w, type: webhook, url: /x}\n", []string{"url: must be an absolute http or https URL"}},
		{"ftp url", "receivers:\n  - {name: w, type: webhook, url: \"ftp://h/x\"}\n", []string{"url: must be an absolute http or https URL"}},
		{"url with credentials", "receivers:\n  - {name: w, type: webhook, url: \"https://u:p@h/x\"}\n", []string{"must not hold a user or password"}},
		{"bad name", "receivers:\n  - {name: Pager Duty, type: webhook, url: \"https://h/x\"}\n", []string{`name: must be 1..64 of a-z`}},
		{"duplicate name", "receivers:\n  - {name: w, type: webhook, url: \"https://h/x\"}\n  - {name: w, type: webhook, url: \"https://h/y\"}\n",
			[]string{"receivers[1] (w): name: receivers[0] has the same name"}},
		{"unknown type", "receivers:\n  - {name: x, type: teams}\n", []string{"receivers[0] (x): type: must be one of pagerduty, email, slack, webhook"}},
		{"email without anything", "receivers:\n  - {name: e, type: email}\n",
			[]string{"smtp: is required", "from: is required", "to: needs at least one address"}},
		{"email bad fields", "receivers:\n  - {name: e, type: email, smtp: {host: h, port: 70000, tls: ssl, username: u}, from: nobody, to: [\"x@\"]}\n",
			[]string{"smtp.port: must be 1..65535", "smtp.tls: must be starttls, tls or none", "smtp.username: needs smtp.password_file",
				`from: "nobody" is not an email address`, `to[0]: "x@" is not an email address`}},
		{"password without username", "receivers:\n  - {name: e, type: email, smtp: {host: h, password_env: P}, from: a@b.c, to: [d@e.f]}\n",
			[]string{"smtp.username: is required with a password"}},
		{"route to nobody", "receivers:\n  - {name: w, type: webhook, url: \"https://h/x\"}\nroutes:\n  - {match: {}, receivers: [w, pager]}\n  - {receivers: []}\n",
			[]string{`routes[0]: receivers[1]: no receiver is named "pager"`, "routes[1]: receivers: needs at least one receiver"}},
		{"route bad match", "receivers:\n  - {name: w, type: webhook, url: \"https://h/x\"}\nroutes:\n  - {match: {severity: high, kinds: [nope]}, receivers: [w]}\n  - {match: {severity: warning, kinds: [restart_failed]}, receivers: [w]}\n",
			[]string{`routes[0]: match.severity: must be critical, warning or info, got "high"`, `routes[0]: match.kinds[0]: no alert kind "nope"`,
				"routes[1]: match.kinds[0]: restart_failed is critical: never matched with severity warning"}},
		{"too large", "# " + strings.Repeat("x", MaxConfigSize) + "\n", []string{"at most 1048576 (1 MiB)"}},
		{"not yaml", "receivers: [\n", []string{"alert configuration"}},
		{"not a mapping", "- receivers\n", []string{"the top level must be a mapping"}},
		{"inline token", "receivers:\n  - {name: s, type: slack, webhook_url: \"https://hooks.slack.com/services/SECRET\"}\n",
			[]string{`unknown field "webhook_url"`, "*_file or *_env"}},
		{"too many problems", "receivers:\n" + strings.Repeat("  - {name: w, type: webhook}\n", 200),
			[]string{"...: 299 more problems not shown"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.config))
			if err == nil {
				t.Fatalf("Parse: got no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse: got error\n%v\nwant it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "R0UT!NG") {
				t.Errorf("Parse: the error repeats a secret: %v", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{GroupInterval: -1, RepeatInterval: -2, Receivers: []Receiver{
		{Name: "a", Type: TypeSlack}, {Name: "b", Type: "x"}, {Name: "c", Type: TypeWebhook}},
		Routes: []Route{{Receivers: []string{"zz"}}}}
	err := c.Validate()
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("Validate: got %v, want joined errors", err)
	}
	var fields []string
	for _, e := range joined.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("Validate: got %T %v, want *FieldError", e, e)
		}
		fields = append(fields, fe.Field)
	}
	want := []string{"group_interval", "repeat_interval", "receivers[0] (a): url_file", "receivers[1] (b): type",
		"receivers[2] (c): url", "routes[0]: receivers[0]"}
	if !slices.Equal(fields, want) {
		t.Errorf("Validate: got problems at %q, want at %q", fields, want)
	}
	if err := Default().Validate(); err == nil {
		t.Errorf("Default().Validate(): got nil, want its routes' receivers missing")
	}
}

func mkAlert(kind, node string) schema.Alert {
	return schema.Alert{Kind: kind, Severity: schema.AlertKinds[kind], NodeID: node, Status: schema.AlertStatusFiring}
}

func TestReceiversFor(t *testing.T) {
	c := Config{
		Receivers: []Receiver{{Name: "pd"}, {Name: "mail"}, {Name: "chat"}},
		Routes: []Route{
			{Match: Match{Severity: schema.SeverityCritical}, Receivers: []string{"pd", "mail"}},
			{Match: Match{Kinds: []string{schema.AlertRestartFailed, schema.AlertSlowRestart}}, Receivers: []string{"chat", "pd"}},
			{Match: Match{Severity: schema.SeverityWarning, Kinds: []string{schema.AlertRollPaused}}, Receivers: []string{"mail", "ghost"}},
		},
	}
	for _, tc := range []struct {
		name string
		a    schema.Alert
		want []string
	}{
		{"critical and listed kind: union, in order, once", mkAlert(schema.AlertRestartFailed, "n1"), []string{"pd", "mail", "chat"}},
		{"critical only", mkAlert(schema.AlertStateLoss, ""), []string{"pd", "mail"}},
		{"kind only", mkAlert(schema.AlertSlowRestart, "n1"), []string{"chat", "pd"}},
		{"severity and kind; undeclared left out", mkAlert(schema.AlertRollPaused, ""), []string{"mail"}},
		{"no route", mkAlert(schema.AlertBackupAge, ""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.ReceiversFor(tc.a); !slices.Equal(got, tc.want) {
				t.Errorf("ReceiversFor: got %q, want %q", got, tc.want)
			}
		})
	}
	if got := Default().ReceiversFor(mkAlert(schema.AlertRestartFailed, "n1")); got != nil {
		t.Errorf("Default().ReceiversFor: got %q, want none (no receivers declared)", got)
	}
	if got, want := Default().Routes[0].Receivers, []string{"pagerduty", "email"}; !slices.Equal(got, want) {
		t.Errorf("Default critical route: got %q, want %q", got, want)
	}
}

func TestWebhookOnly(t *testing.T) {
	c := WebhookOnly("https://hooks.example.com/rc", "/etc/rc/secret")
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for kind := range schema.AlertKinds {
		if got := c.ReceiversFor(mkAlert(kind, "n1")); !slices.Equal(got, []string{"webhook"}) {
			t.Errorf("ReceiversFor(%s): got %q, want [webhook]", kind, got)
		}
	}
	if got := WebhookOnly("https://h/x", "secret").Receivers[0].SecretFile; !filepath.IsAbs(got) {
		t.Errorf("WebhookOnly with a relative secret file: got %q, want it made absolute", got)
	}
	if err := WebhookOnly("hooks.example.com", "").Validate(); err == nil {
		t.Errorf("WebhookOnly with a URL without scheme: got valid, want an error")
	}
}

func testGetenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func testReadFile(m map[string]string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		v, ok := m[p]
		if !ok {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		}
		return []byte(v), nil
	}
}

func TestSecret(t *testing.T) {
	files := testReadFile(map[string]string{"/k": "  TOPSECRET\n", "/empty": " \n", "/slack": "TOPSECRET-not-a-url"})
	env := testGetenv(map[string]string{"KEY": "TOPSECRET", "BLANK": "  "})
	for _, tc := range []struct {
		name    string
		r       Receiver
		want    string
		wantErr string
		is      error
	}{
		{"file, trimmed", Receiver{Name: "pd", Type: TypePagerDuty, RoutingKeyFile: "/k"}, "TOPSECRET", "", nil},
		{"env", Receiver{Name: "pd", Type: TypePagerDuty, RoutingKeyEnv: "KEY"}, "TOPSECRET", "", nil},
		{"smtp password", Receiver{Name: "e", Type: TypeEmail, SMTP: &SMTP{PasswordEnv: "KEY"}}, "TOPSECRET", "", nil},
		{"webhook secret", Receiver{Name: "w", Type: TypeWebhook, SecretFile: "/k"}, "TOPSECRET", "", nil},
		{"optional absent: webhook", Receiver{Name: "w", Type: TypeWebhook}, "", "", nil},
		{"optional absent: email", Receiver{Name: "e", Type: TypeEmail, SMTP: &SMTP{}}, "", "", nil},
		{"required absent", Receiver{Name: "pd", Type: TypePagerDuty}, "", "receiver pd: the routing key needs routing_key_file or routing_key_env", nil},
		{"missing file", Receiver{Name: "pd", Type: TypePagerDuty, RoutingKeyFile: "/nope"}, "", "receiver pd: reading the routing key: open /nope", fs.ErrNotExist},
		{"empty file", Receiver{Name: "slack", Type: TypeSlack, URLFile: "/empty"}, "", "receiver slack: the Slack webhook URL: file /empty is empty or not set", nil},
		{"blank env", Receiver{Name: "w", Type: TypeWebhook, SecretEnv: "BLANK"}, "", "receiver w: the signing secret: environment variable BLANK is empty", nil},
		{"unset env", Receiver{Name: "w", Type: TypeWebhook, SecretEnv: "UNSET"}, "", "environment variable UNSET is empty or not set", nil},
		{"both", Receiver{Name: "pd", Type: TypePagerDuty, RoutingKeyFile: "/k", RoutingKeyEnv: "KEY"}, "", "give routing_key_file or routing_key_env, not both", nil},
		{"slack file not a url", Receiver{Name: "slack", Type: TypeSlack, URLFile: "/slack"}, "", "the Slack webhook URL in file /slack is not an absolute http or https URL", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.r.Secret(env, files)
			if string(got) != tc.want {
				t.Errorf("Secret: got %q, want %q", got, tc.want)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Secret: got error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Secret: got error %v, want one containing %q", err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), "TOPSECRET"):
				t.Errorf("Secret: the error repeats the secret: %v", err)
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Errorf("Secret: got %v, want it to wrap %v", err, tc.is)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Config{GroupWait: Duration(90 * time.Second)})
	if err != nil || !strings.Contains(string(b), `"group_wait":"1m30s"`) {
		t.Fatalf("Marshal: got %s, %v; want group_wait 1m30s", b, err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil || c.GroupWait != Duration(90*time.Second) {
		t.Errorf("Unmarshal(%s): got %v, %v; want 1m30s", b, time.Duration(c.GroupWait), err)
	}
}

// FuzzParse: Parse never panics, and what it accepts is valid and survives
// being written as JSON and parsed again.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(exampleConfigFile); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"receivers":[{"name":"w","type":"webhook","url":"https://h/x"}]}`))
	f.Add([]byte("group_wait: 1s\nroutes:\n  - receivers: [w]\n"))
	f.Add([]byte("receivers:\n  - {name: e, type: email, smtp: {host: h}, from: a@b.c, to: [d@e.f]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid configuration: %v", err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if b2, _ := json.Marshal(again); string(b2) != string(b) {
			t.Fatalf("round trip: got %s, want %s", b2, b)
		}
	})
}

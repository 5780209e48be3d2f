package alerting

import (
	"net/http"

	"github.com/restartcoord/restartcoord/alerting/notify"
)

// BuildNotifiers makes the notifier of every receiver of cfg, reading the
// secrets they reference (getenv, readFile: os.Getenv and os.ReadFile but in
// tests). A receiver that cannot be made (a secret not readable) is left
// out, with why in problems: its deliveries wait, and `restartcoord alerts`
// shows it NOT READY. Secrets never appear in problems.
func BuildNotifiers(cfg Config, getenv func(string) string, readFile func(string) ([]byte, error),
	hc *http.Client) (notifiers map[string]notify.Notifier, problems map[string]string) {
	notifiers, problems = map[string]notify.Notifier{}, map[string]string{}
	for _, r := range cfg.Receivers {
		n, err := buildNotifier(r, getenv, readFile, hc)
		if err != nil {
			problems[r.Name] = err.Error()
			continue
		}
		notifiers[r.Name] = n
	}
	return notifiers, problems
}

func buildNotifier(r Receiver, getenv func(string) string, readFile func(string) ([]byte, error), hc *http.Client) (notify.Notifier, error) {
	secret, err := r.Secret(getenv, readFile)
	if err != nil {
		return nil, err
	}
	switch r.Type {
	case TypePagerDuty:
		return notify.NewPagerDuty(r.Name, r.URL, string(secret), hc)
	case TypeSlack:
		return notify.NewSlack(r.Name, string(secret), hc)
	case TypeWebhook:
		var key []byte
		if len(secret) > 0 {
			if key, err = notify.WebhookKey(secret); err != nil {
				return nil, err
			}
		}
		return notify.NewWebhook(r.Name, r.URL, key, hc)
	default: // TypeEmail (Validate admits no other)
		s := r.SMTP
		return notify.NewEmail(r.Name, notify.EmailConfig{Host: s.Host, Port: s.Port, Username: s.Username,
			Password: string(secret), From: r.From, To: r.To, TLS: s.TLS})
	}
}

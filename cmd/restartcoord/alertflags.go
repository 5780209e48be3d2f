package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/restartcoord/restartcoord/alerting"
	"github.com/restartcoord/restartcoord/coordinator"
)

// alertFlags are the alert delivery flags of `coordinator` and `dev`: a
// configuration file, or the quick start (every alert to one signed
// webhook). A configuration set with `restartcoord alerts config set`
// takes precedence over both.
type alertFlags struct {
	file, webhook, secretFile string
}

func (a *alertFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.file, "alerts-config", "", "alert delivery configuration FILE (receivers and routes, docs/ALERTS.md)")
	fs.StringVar(&a.webhook, "alert-webhook", "", "quick start: every alert to this webhook URL, one JSON object per request")
	fs.StringVar(&a.secretFile, "alert-webhook-secret-file", "", "FILE holding the --alert-webhook signing secret (Standard Webhooks; whsec_<base64> or raw bytes)")
}

// apply validates the flags and sets cfg.Alerts: every problem is a usage
// error now, not a log line later (a secret file is read to check it, and
// read again where it is used).
func (a *alertFlags) apply(cfg *coordinator.Config) error {
	switch {
	case a.file != "" && a.webhook != "":
		return usageErr("--alerts-config and --alert-webhook: give one (the file can hold a webhook receiver)")
	case a.secretFile != "" && a.webhook == "":
		return usageErr("--alert-webhook-secret-file needs --alert-webhook")
	}
	var c alerting.Config
	var text string
	switch {
	case a.file != "":
		data, err := readConfigFile(a.file)
		if err != nil {
			return err
		}
		if c, err = alerting.Parse(data); err != nil {
			return usageErr("--alerts-config %s:\n%v", a.file, err)
		}
		text = string(data)
	case a.webhook != "":
		c = alerting.WebhookOnly(a.webhook, a.secretFile)
		if err := c.Validate(); err != nil {
			return usageErr("--alert-webhook: %v", err)
		}
		text = fmt.Sprintf("# from --alert-webhook\nreceivers:\n  - name: webhook\n    type: webhook\n    url: %s\n", a.webhook)
		if a.secretFile != "" {
			text += "    secret_file: " + c.Receivers[0].SecretFile + "\n"
		}
		text += "routes:\n  - receivers: [webhook]\n"
	default:
		return nil
	}
	for _, r := range c.Receivers {
		if _, err := r.Secret(os.Getenv, os.ReadFile); err != nil {
			return usageErr("alert receiver %s: %v", r.Name, err)
		}
	}
	cfg.Alerts, cfg.AlertsText = &c, text
	return nil
}

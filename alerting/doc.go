// Package alerting decides which alert notifications go to which receivers,
// and when: the delivery configuration (receivers, routes, intervals; parsed
// strictly, validated all at once, secrets referenced by file or environment
// variable and read only where used), the grouping policy (one group per
// fingerprint: wait, repeat, resolve, as Alertmanager does), silences, and
// the engine that turns alerts into deliveries with retries. It is pure:
// times are arguments, state is a JSON value the caller stores, and it
// neither talks to NATS nor sends anything itself; the notifiers that speak
// to PagerDuty, SMTP, Slack and webhooks are in alerting/notify, and the
// coordinator runs the engine. docs/ALERTS.md is its reference.
package alerting

package bus

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Transient reports whether err is NATS or JetStream not answering for now
// (a server lost, a JetStream leader election, a partition healing), as
// opposed to a refusal that a retry would meet again. An error with a
// Temporary() method saying true counts too. A closed connection does not:
// every connection here reconnects for ever, so only its owner closes it,
// and it never opens again.
func Transient(err error) bool {
	var ce *ConnectError
	var api *jetstream.APIError
	var tmp interface{ Temporary() bool }
	switch {
	case err == nil:
		return false
	case errors.As(err, &ce),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting),
		// A pull cut short: the consumer's server stopped, its leader
		// moved, or the server dropped it (an ordered consumer makes it anew).
		errors.Is(err, jetstream.ErrServerShutdown), errors.Is(err, jetstream.ErrConsumerLeadershipChanged),
		errors.Is(err, jetstream.ErrConsumerDeleted):
		return true
	case errors.As(err, &api):
		return api.Code == 503 // JetStream temporarily unavailable
	case errors.As(err, &tmp):
		return tmp.Temporary()
	}
	// Some reads (an object store's listing) report the server's 503 status
	// as a plain error with its description.
	return strings.Contains(err.Error(), "temporarily unavailable")
}

// RetryTransient calls f until it succeeds, fails for good (not
// Transient), or within has passed, backing off from 100 ms to 2 s between
// tries; notify (may be nil) hears of each failure before its wait. It is
// for what NATS may not answer for a while: starting, stopping.
func RetryTransient(ctx context.Context, within time.Duration, notify func(err error, wait time.Duration), f func() error) error {
	return backoff.RetryNotify(func() error {
		err := f()
		if err != nil && !Transient(err) {
			return backoff.Permanent(err)
		}
		return err
	}, natsBackOff(ctx, within), notify)
}

// natsBackOff spaces tries at what NATS does not answer for now: 100 ms
// growing to 2 s, for within (0: until ctx ends).
func natsBackOff(ctx context.Context, within time.Duration) backoff.BackOff {
	return backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(within)), ctx)
}

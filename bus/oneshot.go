package bus

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// OneShotConsumer makes an ordered consumer for one read of a stream, and a
// release that deletes it on the server. A stream takes at most 1,000
// consumers, and an ordered consumer left alone lingers for its inactivity
// threshold (5 minutes by default): cluster health polled every 250 ms
// created one a call and filled ORCH_EVENTS within four minutes, after which
// every history read and node start failed (found by the chaos suite). The
// threshold is also cut to 10 s, for a reader that dies before releasing.
//
// Each fetch makes its server-side consumer anew, and tries that once: left
// to nats.go's default, a fetch tries again and again, forever, whatever
// the caller's context says, so a read whose connection closed under it (a
// coordinator killed mid-read) never returned, and neither did the
// coordinator's Run. ReadAll retries a fetch itself, within its context.
func OneShotConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, func(), error) {
	if cfg.InactiveThreshold == 0 {
		cfg.InactiveThreshold = 10 * time.Second
	}
	if cfg.MaxResetAttempts == 0 {
		cfg.MaxResetAttempts = 1
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, func() {}, err
	}
	release := func() {
		info := cons.CachedInfo()
		if info == nil {
			return // never fetched from: nothing was made on the server
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, stream, info.Name)
	}
	return cons, release, nil
}

// ReadAll calls fn with every message of stream that cfg selects (filter
// subjects may hold wildcards; the deliver policy says where to start),
// oldest first, up to the last one pending when the first is read: a
// message written meanwhile may be read or not, and a busy stream does not
// keep the read going. It reads through one ordered consumer, deleted
// after, and never leaves a pull request waiting: a no-wait fetch answers
// at once, empty when nothing is pending. A fetch that JetStream does not
// answer for now (an election, a server lost) is tried again, resuming
// after the last message read, until ctx ends; a closed connection ends the
// read at once.
func ReadAll(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig, fn func(jetstream.Msg) error) error {
	cons, release, err := OneShotConsumer(ctx, js, stream, cfg)
	if err != nil {
		return err
	}
	defer release()
	var left uint64 // messages still to read, counted at the first one (0: not yet)
	var bo backoff.BackOff
	for {
		got, done := 0, false
		batch, err := cons.FetchNoWait(1024)
		if err == nil {
			if got, done, err = readBatch(batch, &left, fn); done || err != nil {
				return err
			}
			err = batch.Error()
		}
		switch {
		case err == nil && got == 0:
			return nil
		case err == nil:
			continue
		case !Transient(err):
			return err
		}
		if bo == nil {
			bo = natsBackOff(ctx, 0)
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			return errors.Join(err, ctx.Err())
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// readBatch calls fn with a batch's messages until left (counted at the
// first message read) reaches 0 or nothing is pending; the rest of the batch
// is drained. done: the read is complete.
func readBatch(batch jetstream.MessageBatch, left *uint64, fn func(jetstream.Msg) error) (got int, done bool, err error) {
	for m := range batch.Messages() {
		if done || err != nil {
			continue // drain the batch
		}
		got++
		var md *jetstream.MsgMetadata
		if md, err = m.Metadata(); err != nil {
			continue
		}
		if *left == 0 {
			*left = md.NumPending + 1
		}
		if err = fn(m); err != nil {
			continue
		}
		*left--
		done = *left == 0 || md.NumPending == 0
	}
	return got, done, err
}

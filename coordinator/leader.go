package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// LeaderKey is the ORCH_LEASES key of the coordinator leader.
const LeaderKey = "coordinator.leader"

// election holds or seeks the leader lease. A leader acts only while its
// lease is surely held: until ValidUntil (last refresh sent + TTL) minus a
// safety margin, by its own clock; it steps down on its own before the
// lease could have expired. Its term (the lease revision at acquisition) is
// the fencing token sent with every command.
type election struct {
	js     jetstream.JetStream
	id     string
	ttl    time.Duration
	margin time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	lease *bus.Lease
}

// isLeader reports whether this coordinator may act now, and its term.
func (e *election) isLeader() (bool, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease == nil || time.Now().After(e.lease.ValidUntil().Add(-e.margin)) {
		return false, 0
	}
	return true, e.lease.Term()
}

// leader returns the current leader's id ("" when none) from the lease key.
func (e *election) leader(ctx context.Context) string {
	if ok, _ := e.isLeader(); ok {
		return e.id
	}
	h, err := bus.LeaseHolder(ctx, e.js, schema.BucketLeases, LeaderKey)
	if err != nil {
		return ""
	}
	return h
}

// run seeks and holds the lease until ctx ends, then releases it.
func (e *election) run(ctx context.Context, changed func(leader bool, term uint64)) {
	tick := time.NewTicker(e.ttl / 5)
	defer tick.Stop()
	was := false
	for {
		e.step(ctx)
		now, term := e.isLeader()
		if now != was {
			changed(now, term)
			was = now
		}
		select {
		case <-ctx.Done():
			e.mu.Lock()
			l := e.lease
			e.lease = nil
			e.mu.Unlock()
			if l != nil {
				rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = l.Release(rctx)
				cancel()
			}
			if was {
				changed(false, 0)
			}
			return
		case <-tick.C:
		}
	}
}

func (e *election) step(ctx context.Context) {
	e.mu.Lock()
	l := e.lease
	e.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, e.ttl/5)
	defer cancel()
	if l != nil {
		err := l.Refresh(cctx)
		if errors.Is(err, bus.ErrLeaseLost) {
			if ok, _, _ := l.Adopt(cctx); ok {
				return // an earlier refresh landed; only its acknowledgement was lost
			}
		}
		if errors.Is(err, bus.ErrLeaseLost) {
			e.log.Warn("leader lease lost", "term", l.Term())
			e.mu.Lock()
			e.lease = nil
			e.mu.Unlock()
		} else if err != nil {
			e.log.Warn("leader lease refresh failed", "err", err)
		}
		return
	}
	nl, err := bus.AcquireLease(cctx, e.js, schema.BucketLeases, LeaderKey, []byte(e.id), e.ttl)
	if err == nil {
		e.log.Info("became leader", "term", nl.Term())
		e.mu.Lock()
		e.lease = nl
		e.mu.Unlock()
	}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// The node-id lease: taken at start (at once from a holder proven dead,
// else waited for), refreshed while the node runs, taken again if it
// expired with nobody else holding it, and given up for good when another
// instance holds it.

// NodeIDStart says how Run took the node id.
type NodeIDStart struct {
	// TakenOver: the lease was held by a process proven dead on this
	// machine, and taken from it by compare-and-set on its revision.
	TakenOver bool
	// WaitedOut: the lease was held by a silent holder not proven dead,
	// and taken once it expired.
	WaitedOut bool
	// HolderRevision is the revision the previous holder's lease was at
	// when it was first seen (0 when the id was free).
	HolderRevision uint64
	// Term is the revision this supervisor's lease began at: its fencing
	// token, above any earlier holder's.
	Term uint64
}

// NodeIDStart says how Run took the node id; zero before it did.
func (s *Supervisor) NodeIDStart() NodeIDStart {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idStart
}

func (s *Supervisor) setNodeIDStart(st NodeIDStart) {
	st.Term = s.lease.Term()
	s.mu.Lock()
	s.idStart = st
	s.mu.Unlock()
}

// takeNodeID acquires the node-id lease. If another holder has it and its
// record proves it a dead process of this machine (Holder.ProvenDead: a
// whole node killed with -9 and restarted at once by systemd), the lease is
// taken from it at once by compare-and-set on its revision, unless
// Config.FastTakeover is off. Otherwise, if the holder is alive (its
// heartbeats arrive, or it refreshes the lease), this node refuses to
// start; if it is silent (another host, another boot or PID namespace, an
// unreadable or older record), it waits for that lease to expire.
func (s *Supervisor) takeNodeID(ctx context.Context) error {
	js := s.bs.JetStream()
	key := schema.LeaseKeyNode(s.cfg.NodeID)
	var err error
	s.lease, err = s.acquireNodeID(ctx, js, key)
	if err == nil {
		s.setNodeIDStart(NodeIDStart{})
	}
	if !errors.Is(err, bus.ErrLeaseHeld) {
		return err
	}
	first := revisionHeld(err)
	if s.cfg.FastTakeover {
		lease, terr := s.takeOverDead(ctx, js, key, err)
		if lease != nil {
			s.lease = lease
			s.setNodeIDStart(NodeIDStart{TakenOver: true, HolderRevision: first})
			return nil
		}
		if terr != nil {
			// Moved while we looked (refreshed: alive; taken: by another),
			// or NATS not answering: the ordinary path below decides.
			err = terr
		}
	}
	sub, serr := s.conn.SubscribeSync(schema.HeartbeatSubject(s.cfg.NodeID))
	if serr != nil {
		return serr
	}
	_, hbErr := sub.NextMsg(3 * s.cfg.HeartbeatInterval)
	_ = sub.Unsubscribe()
	if hbErr == nil {
		return fmt.Errorf("%w: %v, and it is alive (its heartbeats arrive)", ErrNodeIDTaken, err)
	}
	s.log.Warn("node id held by a silent holder; waiting for its lease to expire", "holder_err", err, "ttl", s.cfg.LeaseTTL)
	// Only a stream leader expires a lease: after a JetStream outage, one
	// elected late does it well after the TTL ran out (found by CI: a 3 s
	// outage and an 8 s election outlasted a wait of TTL + 2 s). So the wait
	// allows the TTL plus StartTimeout, the time any start gives JetStream
	// to answer, and ends early only if the lease moves: a holder that
	// refreshes it is alive.
	window := s.cfg.LeaseTTL + s.cfg.StartTimeout
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		s.lease, err = s.acquireNodeID(ctx, js, key)
		if err == nil {
			s.setNodeIDStart(NodeIDStart{WaitedOut: true, HolderRevision: first})
		}
		if !errors.Is(err, bus.ErrLeaseHeld) {
			return err
		}
		if rev := revisionHeld(err); first != 0 && rev != 0 && rev != first {
			return fmt.Errorf("%w: %v, and it is alive (its lease moved from revision %d to %d)", ErrNodeIDTaken, err, first, rev)
		}
	}
	return fmt.Errorf("%w: %v (its lease did not expire within %s)", ErrNodeIDTaken, err, window)
}

// takeOverDead takes the node-id lease from the holder named in heldErr if
// its record proves it dead, by compare-and-set on the revision it was read
// at: a holder that refreshed since (alive after all) or a successor that
// took it first moves that revision, and the write fails. It returns the
// lease, or nil and why not as an error (nil when the holder is simply not
// provably dead).
func (s *Supervisor) takeOverDead(ctx context.Context, js jetstream.JetStream, key string, heldErr error) (*bus.Lease, error) {
	var held *bus.LeaseHeldError
	if !errors.As(heldErr, &held) || held.Revision == 0 {
		return nil, nil
	}
	h, ok := ParseHolder([]byte(held.Holder))
	if !ok {
		s.log.Info("node id held by a holder without a process record (an older node); not provable dead", "holder", held.Holder)
		return nil, nil
	}
	dead, why := h.ProvenDead()
	if !dead {
		s.log.Info("node id holder not proven dead", "holder", h.Instance, "why", why)
		return nil, nil
	}
	var lease *bus.Lease
	err := bus.RetryTransient(ctx, s.cfg.StartTimeout, s.warnRetry("node id lease takeover"), func() error {
		var err error
		lease, err = bus.TakeOverLease(ctx, js, schema.BucketLeases, key, held.Revision, s.leaseValue, s.cfg.LeaseTTL)
		return err
	})
	if err != nil {
		s.log.Warn("node id holder proven dead, but its lease could not be taken over", "holder", h.Instance, "err", err)
		return nil, err
	}
	s.log.Info("node id lease taken over from a dead holder", "holder", h.Instance, "why", why,
		"from_revision", held.Revision, "to_revision", lease.Term())
	return lease, nil
}

// revisionHeld is the revision of a lease held by another, or 0.
func revisionHeld(err error) uint64 {
	var held *bus.LeaseHeldError
	if errors.As(err, &held) {
		return held.Revision
	}
	return 0
}

// acquireNodeID tries to create the node-id lease. A JetStream failover (a
// server lost, a partition healing) can leave the leases bucket without a
// leader for some seconds: such errors are retried for up to StartTimeout
// rather than failing the start (found by the chaos suite). A create that
// landed but whose answer was lost shows up as held by this very instance,
// silent, so the caller waits for it to expire like any silent holder's.
func (s *Supervisor) acquireNodeID(ctx context.Context, js jetstream.JetStream, key string) (*bus.Lease, error) {
	var l *bus.Lease
	err := bus.RetryTransient(ctx, s.cfg.StartTimeout, s.warnRetry("node id lease"), func() error {
		var err error
		l, err = bus.AcquireLease(ctx, js, schema.BucketLeases, key, s.leaseValue, s.cfg.LeaseTTL)
		return err
	})
	return l, err
}

func (s *Supervisor) refreshLease(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
		err := s.lease.Refresh(rctx)
		cancel()
		if errors.Is(err, bus.ErrLeaseLost) {
			err = s.retakeLease(ctx)
		}
		var other *heldByOther
		switch {
		case err == nil:
		case errors.As(err, &other):
			s.loseNodeID(fmt.Errorf("%w: the node id lease expired and %s holds it now", ErrNodeIDTaken, other.holder))
			return
		default:
			s.log.Warn("node id lease refresh failed (retrying)", "err", err)
		}
		// Held while valid by this clock: a failed refresh loses nothing yet.
		s.met.lease(err == nil || time.Now().Before(s.lease.ValidUntil()))
	}
}

// heldByOther: the node id lease is held by another instance.
type heldByOther struct{ holder string }

func (e *heldByOther) Error() string { return "node id lease held by " + e.holder }

// retakeLease handles a lease that expired under us (refreshes delayed by a
// slow or failing-over NATS, a partition, a frozen process): if nobody else
// took the key, take it again. It returns *heldByOther only when it read
// another holder; any other error means it could not tell (NATS not
// answering yet), and the next tick tries again.
func (s *Supervisor) retakeLease(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
	defer cancel()
	// A refresh whose acknowledgement was lost but which landed: still ours.
	ok, holder, err := s.lease.Adopt(rctx)
	switch {
	case err != nil:
		return fmt.Errorf("lease expired; reading it again: %w", err)
	case ok:
		return nil
	case holder != "":
		return &heldByOther{holderInstance(holder)}
	}
	lease, err := bus.AcquireLease(rctx, s.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode(s.cfg.NodeID),
		s.leaseValue, s.cfg.LeaseTTL)
	if err != nil {
		// Held: by us (a create that landed unacknowledged, adopted next
		// tick) or by another (seen next tick).
		return fmt.Errorf("lease expired; taking it again: %w", err)
	}
	s.log.Warn("node id lease had expired (refreshes delayed) with nobody else holding it; taken again")
	s.lease = lease
	return nil
}

// loseNodeID stops the node for good when another instance holds its id:
// the worker is killed at once (it must not serve as this node beside the
// other), and Run returns err without deregistering or releasing, which
// are the other's now. A supervisor restarted by systemd or Docker then
// finds the id held and alive, and refuses to start. Called once: the lease
// refresh loop ends after it.
func (s *Supervisor) loseNodeID(err error) {
	s.log.Error("node id lease lost: another instance owns this node id now; stopping the worker", "err", err)
	if p, ok := s.currentWorker(); ok {
		p.expect("lease lost")
		p.kill()
	}
	s.lostErr = err
	s.met.lease(false)
	close(s.lost)
}

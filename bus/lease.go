package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseHeld is returned by AcquireLease when another holder has the key.
var ErrLeaseHeld = errors.New("bus: lease held by another holder")

// ErrLeaseLost is returned by Refresh when the key changed under us (it
// expired and someone else took it, or it was deleted).
var ErrLeaseLost = errors.New("bus: lease lost")

// Lease is a key in a KV bucket with a per-key TTL, held while refreshed.
// Its Term (the revision at acquisition) is a fencing token: a later holder
// always has a higher one.
type Lease struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	key    string
	ttl    time.Duration

	mu         sync.Mutex
	value      []byte
	term       uint64
	rev        uint64
	validUntil time.Time // local clock: last refresh sent + ttl
}

// AcquireLease creates key with value and a TTL, if nobody holds it. When the
// key is held it returns ErrLeaseHeld wrapped with the holder's value.
func AcquireLease(ctx context.Context, js jetstream.JetStream, bucket, key string, value []byte, ttl time.Duration) (*Lease, error) {
	if ttl < time.Second {
		return nil, fmt.Errorf("bus: lease ttl must be at least 1s, got %s", ttl)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bus: lease bucket %s: %w", bucket, err)
	}
	sent := time.Now()
	rev, err := kv.Create(ctx, key, value, jetstream.KeyTTL(ttl))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Read at the leader: a replica that lags would show an older
			// revision, which a caller watching the lease takes for a move.
			held := &LeaseHeldError{Key: key, Holder: "unknown"}
			if v, rev, gerr := KVGet(ctx, js, bucket, key); gerr == nil {
				held.Holder, held.Revision = string(v), rev
			}
			return nil, held
		}
		return nil, fmt.Errorf("bus: acquire lease %s: %w", key, err)
	}
	return &Lease{js: js, kv: kv, bucket: bucket, key: key, ttl: ttl, value: value,
		term: rev, rev: rev, validUntil: sent.Add(ttl)}, nil
}

// TakeOverLease takes key from a holder known to be gone (its process
// proven dead) without waiting for its TTL: it writes value by
// compare-and-set on heldRev, the holder's revision (read at the leader, as
// LeaseHeldError.Revision is), with the TTL, as Refresh does (KV Update()
// would drop the per-key TTL). The new lease's term is the new revision, so
// it is above the dead holder's and fences it like any later holder. When
// the key moved since heldRev (the holder refreshed it, it expired and was
// taken, or another process took it over first) it returns ErrLeaseHeld
// wrapped in a *LeaseHeldError naming the holder now; when that holder is
// value itself (a try of ours landed but its acknowledgement was lost), the
// lease is adopted at its revision instead.
func TakeOverLease(ctx context.Context, js jetstream.JetStream, bucket, key string, heldRev uint64, value []byte, ttl time.Duration) (*Lease, error) {
	if ttl < time.Second {
		return nil, fmt.Errorf("bus: lease ttl must be at least 1s, got %s", ttl)
	}
	if heldRev == 0 {
		// Zero would mean "no message expected" to the server: a create.
		return nil, fmt.Errorf("bus: take over lease %s: the holder's revision is unknown", key)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bus: lease bucket %s: %w", bucket, err)
	}
	sent := time.Now()
	ack, err := js.Publish(ctx, "$KV."+bucket+"."+key, value,
		jetstream.WithMsgTTL(ttl), jetstream.WithExpectLastSequencePerSubject(heldRev))
	if err != nil {
		if !wrongLastSequence(err) {
			return nil, fmt.Errorf("bus: take over lease %s: %w", key, err)
		}
		held := &LeaseHeldError{Key: key, Holder: "unknown"}
		v, rev, gerr := KVGet(ctx, js, bucket, key)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			held.Holder = "nobody (it expired or was released)"
		case gerr == nil && string(v) == string(value):
			// Ours already: an earlier try landed, its answer lost. The
			// TTL runs from then, which validUntil must not overstate.
			return &Lease{js: js, kv: kv, bucket: bucket, key: key, ttl: ttl, value: value,
				term: rev, rev: rev, validUntil: sent.Add(ttl)}, nil
		case gerr == nil:
			held.Holder, held.Revision = string(v), rev
		}
		return nil, held
	}
	return &Lease{js: js, kv: kv, bucket: bucket, key: key, ttl: ttl, value: value,
		term: ack.Sequence, rev: ack.Sequence, validUntil: sent.Add(ttl)}, nil
}

// wrongLastSequence reports a publish refused because the subject's last
// sequence was not the one expected: a compare-and-set that lost.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// LeaseHeldError says who holds a lease, and at which revision (0 when it
// could not be read): a holder that refreshes its lease moves it.
type LeaseHeldError struct {
	Key      string
	Holder   string
	Revision uint64
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("lease %s is held by %s", e.Key, e.Holder)
}
func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// Term is the revision at which the lease was acquired: the fencing token.
func (l *Lease) Term() uint64 { l.mu.Lock(); defer l.mu.Unlock(); return l.term }

// TTL is the lease's time to live.
func (l *Lease) TTL() time.Duration { return l.ttl }

// ValidUntil is when the lease may have expired, by the local clock, counted
// from when the last successful refresh was sent.
func (l *Lease) ValidUntil() time.Time { l.mu.Lock(); defer l.mu.Unlock(); return l.validUntil }

// Refresh extends the TTL. It publishes to the key's subject with the TTL
// and the expected last revision (KV Update() would drop the per-key TTL),
// so a key someone else took in between fails with ErrLeaseLost.
func (l *Lease) Refresh(ctx context.Context) error {
	l.mu.Lock()
	rev, value := l.rev, l.value
	l.mu.Unlock()
	sent := time.Now()
	ack, err := l.js.Publish(ctx, "$KV."+l.bucket+"."+l.key, value,
		jetstream.WithMsgTTL(l.ttl), jetstream.WithExpectLastSequencePerSubject(rev))
	if err != nil {
		if wrongLastSequence(err) {
			return fmt.Errorf("%w: %s", ErrLeaseLost, l.key)
		}
		return fmt.Errorf("bus: refresh lease %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rev, l.validUntil = ack.Sequence, sent.Add(l.ttl)
	l.mu.Unlock()
	return nil
}

// SetValue changes the value written on the next refresh.
func (l *Lease) SetValue(v []byte) { l.mu.Lock(); l.value = v; l.mu.Unlock() }

// Release deletes the key if it is still ours. A refresh that landed
// without its acknowledgement (the node stopping in the middle of one)
// moved the revision on: the lease is adopted and released at that one.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		switch adopted, holder, aerr := l.Adopt(ctx); {
		case aerr == nil && holder == "":
			return nil // gone already: an earlier try of ours landed unacknowledged, or it expired
		case adopted:
			l.mu.Lock()
			rev = l.rev
			l.mu.Unlock()
			err = l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
		}
	}
	if err != nil {
		return fmt.Errorf("bus: release lease %s: %w", l.key, err)
	}
	return nil
}

// LeaseHolder returns the current value of a lease key, or "" when free.
func LeaseHolder(ctx context.Context, js jetstream.JetStream, bucket, key string) (string, error) {
	v, _, err := KVGet(ctx, js, bucket, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(v), nil
}

// Adopt handles ErrLeaseLost after a refresh whose acknowledgement was lost
// but which landed: if the key still holds this lease's value, its current
// revision is taken as ours and the lease goes on (its term unchanged).
// Otherwise it returns false and the holder it read: someone else's value,
// or "" when the key is gone. One read, at the bucket's leader, answers
// both questions.
func (l *Lease) Adopt(ctx context.Context) (adopted bool, holder string, err error) {
	v, rev, err := KVGet(ctx, l.js, l.bucket, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if string(v) != string(l.value) {
		return false, string(v), nil
	}
	l.rev = rev
	return true, string(l.value), nil
}

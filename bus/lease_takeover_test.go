package bus_test

import (
	"errors"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// TestTakeOverLease: a lease taken over by compare-and-set on the holder's
// revision gets a higher term, the old holder is fenced out, and the key
// keeps a TTL (left alone, it expires); a takeover on a revision that is no
// longer the key's fails with ErrLeaseHeld naming the holder now, and one
// whose earlier try landed is adopted.
func TestTakeOverLease(t *testing.T) {
	st := newStore(t, true)
	js := st.JetStream()
	bucket := schema.BucketLeases
	holder := func(t *testing.T, key string) string {
		t.Helper()
		h, err := bus.LeaseHolder(testCtx(t, 5*time.Second), js, bucket, key)
		if err != nil {
			t.Fatalf("LeaseHolder(%s): %v", key, err)
		}
		return h
	}
	// heldAt is the revision AcquireLease reports to a contender: the one a
	// process that proved the holder dead takes over at.
	heldAt := func(t *testing.T, key string) uint64 {
		t.Helper()
		_, err := bus.AcquireLease(testCtx(t, 5*time.Second), js, bucket, key, []byte("contender"), leaseTTL)
		var he *bus.LeaseHeldError
		if !errors.As(err, &he) || he.Revision == 0 {
			t.Fatalf("contender's AcquireLease = %v, want a LeaseHeldError with a revision", err)
		}
		return he.Revision
	}

	t.Run("on the holder's revision", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		// A long TTL for the dead holder: only the taken-over TTL can make
		// the key expire within the test.
		dead, err := bus.AcquireLease(ctx, js, bucket, "taken", []byte("dead"), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rev := heldAt(t, "taken")
		l, err := bus.TakeOverLease(ctx, js, bucket, "taken", rev, []byte("new"), leaseTTL)
		if err != nil {
			t.Fatalf("TakeOverLease at the holder's revision %d: %v", rev, err)
		}
		if l.Term() <= dead.Term() || l.Term() <= rev {
			t.Errorf("term %d after taking over revision %d (old term %d): want above both", l.Term(), rev, dead.Term())
		}
		if h := holder(t, "taken"); h != "new" {
			t.Errorf("holder %q, want new", h)
		}
		if until := time.Until(l.ValidUntil()); until <= 0 || until > leaseTTL {
			t.Errorf("ValidUntil is %s from now, want within (0, %s]", until, leaseTTL)
		}
		if err := dead.Refresh(ctx); !errors.Is(err, bus.ErrLeaseLost) {
			t.Errorf("old holder's Refresh = %v, want ErrLeaseLost", err)
		}
		if err := l.Refresh(ctx); err != nil {
			t.Errorf("new holder's Refresh: %v", err)
		}
		// The per-key TTL survived the takeover (and the refresh): left
		// alone, the key expires after leaseTTL, not the dead one's minute.
		eventually(t, leaseTTL+3*time.Second, "taken-over lease expires once refreshes stop", func() bool {
			return holder(t, "taken") == ""
		})
	})

	t.Run("on a revision that moved", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		alive, err := bus.AcquireLease(ctx, js, bucket, "moved", []byte("alive"), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rev := heldAt(t, "moved")
		// The holder refreshes between the read and the takeover: alive.
		if err := alive.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = bus.TakeOverLease(ctx, js, bucket, "moved", rev, []byte("new"), leaseTTL)
		var he *bus.LeaseHeldError
		if !errors.Is(err, bus.ErrLeaseHeld) || !errors.As(err, &he) || he.Holder != "alive" || he.Revision <= rev {
			t.Fatalf("TakeOverLease on stale revision %d = %v, want ErrLeaseHeld by alive at a later revision", rev, err)
		}
		if h := holder(t, "moved"); h != "alive" {
			t.Errorf("holder %q after a failed takeover, want alive", h)
		}
		if err := alive.Refresh(ctx); err != nil {
			t.Errorf("holder's Refresh after a failed takeover: %v", err)
		}
		if _, err := bus.TakeOverLease(ctx, js, bucket, "moved", 0, []byte("new"), leaseTTL); err == nil {
			t.Error("TakeOverLease at revision 0 (unknown) succeeded")
		}
	})

	t.Run("landed unacknowledged", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		if _, err := bus.AcquireLease(ctx, js, bucket, "retried", []byte("dead"), time.Minute); err != nil {
			t.Fatal(err)
		}
		rev := heldAt(t, "retried")
		first, err := bus.TakeOverLease(ctx, js, bucket, "retried", rev, []byte("new"), leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		// The same try again, as after a lost acknowledgement.
		again, err := bus.TakeOverLease(ctx, js, bucket, "retried", rev, []byte("new"), leaseTTL)
		if err != nil {
			t.Fatalf("retried takeover of a key that holds our value: %v, want it adopted", err)
		}
		if again.Term() != first.Term() {
			t.Errorf("adopted at term %d, want the landed try's %d", again.Term(), first.Term())
		}
		if err := again.Refresh(ctx); err != nil {
			t.Errorf("Refresh of the adopted lease: %v", err)
		}
	})
}

package bus_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

const leaseTTL = time.Second

func TestLease(t *testing.T) {
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

	t.Run("held", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		a, err := bus.AcquireLease(ctx, js, bucket, "held", []byte("holder-a"), leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		if a.Term() == 0 || a.TTL() != leaseTTL {
			t.Errorf("term %d, ttl %s", a.Term(), a.TTL())
		}
		if until := time.Until(a.ValidUntil()); until <= 0 || until > leaseTTL {
			t.Errorf("ValidUntil is %s from now, want within (0, %s]", until, leaseTTL)
		}
		if h := holder(t, "held"); h != "holder-a" {
			t.Errorf("holder %q, want holder-a", h)
		}
		_, err = bus.AcquireLease(ctx, js, bucket, "held", []byte("holder-b"), leaseTTL)
		if !errors.Is(err, bus.ErrLeaseHeld) {
			t.Fatalf("second AcquireLease = %v, want ErrLeaseHeld", err)
		}
		var he *bus.LeaseHeldError
		if !errors.As(err, &he) || he.Holder != "holder-a" || he.Key != "held" {
			t.Fatalf("error %#v does not name holder-a and the key", err)
		}
		if !strings.Contains(err.Error(), "holder-a") {
			t.Errorf("message %q does not name the holder", err)
		}
		// Another key is independent.
		if _, err := bus.AcquireLease(ctx, js, bucket, "held-other", []byte("holder-b"), leaseTTL); err != nil {
			t.Errorf("other key: %v", err)
		}
	})

	t.Run("refresh keeps it", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		a, err := bus.AcquireLease(ctx, js, bucket, "refreshed", []byte("holder-a"), leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		term := a.Term()
		prevValid := a.ValidUntil()
		for end := time.Now().Add(2 * leaseTTL); time.Now().Before(end); {
			time.Sleep(leaseTTL / 3)
			if err := a.Refresh(ctx); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if v := a.ValidUntil(); !v.After(prevValid) {
				t.Errorf("ValidUntil did not advance: %s then %s", prevValid, v)
			} else {
				prevValid = v
			}
		}
		if h := holder(t, "refreshed"); h != "holder-a" {
			t.Fatalf("after refreshing for %s: holder %q, want holder-a", 2*leaseTTL, h)
		}
		if a.Term() != term {
			t.Errorf("term changed on refresh: %d -> %d", term, a.Term())
		}
		// Still held against a contender.
		if _, err := bus.AcquireLease(ctx, js, bucket, "refreshed", []byte("holder-b"), leaseTTL); !errors.Is(err, bus.ErrLeaseHeld) {
			t.Errorf("contender: %v, want ErrLeaseHeld", err)
		}
		// SetValue shows on the next refresh.
		a.SetValue([]byte("holder-a2"))
		if err := a.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if h := holder(t, "refreshed"); h != "holder-a2" {
			t.Errorf("holder after SetValue+Refresh %q", h)
		}
		// The refreshed key still carries the TTL: left alone, it expires.
		eventually(t, leaseTTL+2*time.Second, "refreshed lease expires once refreshes stop", func() bool {
			return holder(t, "refreshed") == ""
		})
	})

	t.Run("expires and is taken over", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		a, err := bus.AcquireLease(ctx, js, bucket, "expiring", []byte("holder-a"), leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		acquired := time.Now()
		time.Sleep(leaseTTL / 2)
		if h := holder(t, "expiring"); h != "holder-a" && time.Since(acquired) < leaseTTL {
			t.Fatalf("lease gone after %s of a %s TTL (holder %q)", time.Since(acquired), leaseTTL, h)
		}
		eventually(t, leaseTTL+2*time.Second, "unrefreshed lease expires", func() bool {
			return holder(t, "expiring") == ""
		})
		b, err := bus.AcquireLease(ctx, js, bucket, "expiring", []byte("holder-b"), leaseTTL)
		if err != nil {
			t.Fatalf("acquire after expiry: %v", err)
		}
		if b.Term() <= a.Term() {
			t.Errorf("new term %d not above old term %d", b.Term(), a.Term())
		}
		if err := a.Refresh(ctx); !errors.Is(err, bus.ErrLeaseLost) {
			t.Errorf("old holder's Refresh = %v, want ErrLeaseLost", err)
		}
		if h := holder(t, "expiring"); h != "holder-b" {
			t.Errorf("holder %q after the old holder's refresh, want holder-b", h)
		}
		if err := b.Refresh(ctx); err != nil {
			t.Errorf("new holder's Refresh: %v", err)
		}
		// The old holder cannot release the new holder's lease.
		if err := a.Release(ctx); err == nil {
			t.Error("old holder's Release succeeded")
		}
		if h := holder(t, "expiring"); h != "holder-b" {
			t.Errorf("holder %q after the old holder's release, want holder-b", h)
		}
	})

	t.Run("expired without successor", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		a, err := bus.AcquireLease(ctx, js, bucket, "lapsed", []byte("holder-a"), leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, leaseTTL+2*time.Second, "unrefreshed lease expires", func() bool {
			return holder(t, "lapsed") == ""
		})
		if err := a.Refresh(ctx); !errors.Is(err, bus.ErrLeaseLost) {
			t.Errorf("Refresh after expiry = %v, want ErrLeaseLost", err)
		}
		if h := holder(t, "lapsed"); h != "" {
			t.Errorf("a lost refresh revived the lease: holder %q", h)
		}
	})

	t.Run("release", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		a, err := bus.AcquireLease(ctx, js, bucket, "released", []byte("holder-a"), leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if h := holder(t, "released"); h != "" {
			t.Errorf("holder %q right after Release", h)
		}
		b, err := bus.AcquireLease(ctx, js, bucket, "released", []byte("holder-b"), leaseTTL)
		if err != nil {
			t.Fatalf("acquire right after Release: %v", err)
		}
		if b.Term() <= a.Term() {
			t.Errorf("new term %d not above old term %d", b.Term(), a.Term())
		}
		if err := a.Refresh(ctx); !errors.Is(err, bus.ErrLeaseLost) {
			t.Errorf("Refresh after Release = %v, want ErrLeaseLost", err)
		}
	})

	t.Run("bad arguments", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t, 10*time.Second)
		if _, err := bus.AcquireLease(ctx, js, bucket, "short", []byte("x"), 500*time.Millisecond); err == nil {
			t.Error("TTL under 1s accepted")
		}
		if _, err := bus.AcquireLease(ctx, js, "NO_SUCH_BUCKET", "k", []byte("x"), leaseTTL); err == nil || errors.Is(err, bus.ErrLeaseHeld) {
			t.Errorf("missing bucket: %v", err)
		}
		if h, err := bus.LeaseHolder(ctx, js, bucket, "never-taken"); err != nil || h != "" {
			t.Errorf("LeaseHolder of a free key = %q, %v", h, err)
		}
	})
}

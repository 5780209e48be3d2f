package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// A refresh that landed but whose acknowledgement was lost makes the next
// refresh fail; the lease is still ours and Adopt takes it back, while a
// key someone else holds is not adopted.
func TestLeaseAdoptAfterALostAcknowledgement(t *testing.T) {
	js, ctx, l := leaseOfMine(t, "adopt.me")
	// What a refresh with a lost acknowledgement leaves behind.
	if _, err := js.Publish(ctx, "$KV."+schema.BucketLeases+".adopt.me", []byte("me"), jetstream.WithMsgTTL(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Fatalf("refresh after a landed one: %v, want ErrLeaseLost", err)
	}
	if ok, _, err := l.Adopt(ctx); !ok || err != nil {
		t.Fatalf("adopt: %v %v", ok, err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Fatalf("refresh after adopt: %v", err)
	}
	if _, err := js.Publish(ctx, "$KV."+schema.BucketLeases+".adopt.me", []byte("someone else"), jetstream.WithMsgTTL(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ok, holder, _ := l.Adopt(ctx); ok || holder != "someone else" {
		t.Fatalf("adopt of a key someone else holds: adopted %v, holder %q", ok, holder)
	}
}

// Released after a refresh that landed unacknowledged: still released.
func TestLeaseReleaseAfterALostAcknowledgement(t *testing.T) {
	js, ctx, l := leaseOfMine(t, "release.me")
	if _, err := js.Publish(ctx, "$KV."+schema.BucketLeases+".release.me", []byte("me"), jetstream.WithMsgTTL(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if h, err := bus.LeaseHolder(ctx, js, schema.BucketLeases, "release.me"); err != nil || h != "" {
		t.Fatalf("holder %q (%v) after release", h, err)
	}
}

// Released twice, the first try landing unacknowledged: the key is gone, the
// second try is not an error.
func TestLeaseReleaseWhenAlreadyGone(t *testing.T) {
	js, ctx, l := leaseOfMine(t, "gone.already")
	kv, err := js.KeyValue(ctx, schema.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "gone.already"); err != nil { // what the lost try did
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release of a key already gone: %v", err)
	}
}

// leaseOfMine acquires key in the leases bucket of a fresh store, held by
// "me" for 5 s, with a context for the test.
func leaseOfMine(t *testing.T, key string) (jetstream.JetStream, context.Context, *bus.Lease) {
	t.Helper()
	js := newStore(t, true).JetStream()
	ctx := testCtx(t, 10*time.Second)
	l, err := bus.AcquireLease(ctx, js, schema.BucketLeases, key, []byte("me"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return js, ctx, l
}

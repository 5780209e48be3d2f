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
	s := newStore(t, true)
	js := s.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := bus.AcquireLease(ctx, js, schema.BucketLeases, "adopt.me", []byte("me"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// What a refresh with a lost acknowledgement leaves behind.
	if _, err := js.Publish(ctx, "$KV."+schema.BucketLeases+".adopt.me", []byte("me"), jetstream.WithMsgTTL(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Fatalf("refresh after a landed one: %v, want ErrLeaseLost", err)
	}
	if ok, err := l.Adopt(ctx); !ok || err != nil {
		t.Fatalf("adopt: %v %v", ok, err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Fatalf("refresh after adopt: %v", err)
	}
	if _, err := js.Publish(ctx, "$KV."+schema.BucketLeases+".adopt.me", []byte("someone else"), jetstream.WithMsgTTL(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.Adopt(ctx); ok {
		t.Fatal("adopted a key someone else holds")
	}
}

// Released after a refresh that landed unacknowledged: still released.
func TestLeaseReleaseAfterALostAcknowledgement(t *testing.T) {
	s := newStore(t, true)
	js := s.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := bus.AcquireLease(ctx, js, schema.BucketLeases, "release.me", []byte("me"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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

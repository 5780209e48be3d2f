package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

var allStores = []string{
	schema.StreamRequests, schema.StreamJournal, schema.StreamEvents, schema.StreamAlerts, schema.StreamAudit,
	schema.BucketNodes, schema.BucketLeases, schema.BucketConfig, schema.ObjectSnapshots,
}

func TestStoreConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*bus.StoreConfig)
		ok     bool
		want   string // part of the error
	}{
		{"defaults", func(*bus.StoreConfig) {}, true, ""},
		{"replicas 3", func(c *bus.StoreConfig) { c.Replicas = 3 }, true, ""},
		{"replicas 0", func(c *bus.StoreConfig) { c.Replicas = 0 }, false, "replicas"},
		{"replicas -1", func(c *bus.StoreConfig) { c.Replicas = -1 }, false, "replicas"},
		{"replicas 6", func(c *bus.StoreConfig) { c.Replicas = 6 }, false, "replicas"},
		{"buffer 0", func(c *bus.StoreConfig) { c.RequestBuffer = 0 }, false, "request buffer"},
		{"buffer -5", func(c *bus.StoreConfig) { c.RequestBuffer = -5 }, false, "request buffer"},
		{"buffer too big", func(c *bus.StoreConfig) { c.RequestBuffer = 100001 }, false, "request buffer"},
		{"expiration 0", func(c *bus.StoreConfig) { c.BufferExpiration = 0 }, false, "expiration"},
		{"expiration 999ms", func(c *bus.StoreConfig) { c.BufferExpiration = 999 * time.Millisecond }, false, "expiration"},
		{"expiration 1s", func(c *bus.StoreConfig) { c.BufferExpiration = time.Second }, true, ""},
		{"history 0", func(c *bus.StoreConfig) { c.HistoryAge = 0 }, false, "history"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := bus.DefaultStoreConfig()
			tc.modify(&c)
			err := c.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", c, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDefaultStoreConfig(t *testing.T) {
	c := bus.DefaultStoreConfig()
	if c.Replicas != 1 || c.RequestBuffer != 100 || c.BufferExpiration != 300*time.Second {
		t.Errorf("defaults %+v differ from the contract (1 replica, 100 requests, 300 s)", c)
	}
}

func TestInitRefusesInvalidConfig(t *testing.T) {
	st := newStore(t, false)
	ctx := testCtx(t, 10*time.Second)
	c := bus.DefaultStoreConfig()
	c.RequestBuffer = 0
	if err := bus.Init(ctx, st.JetStream(), c); err == nil {
		t.Fatal("Init with a zero buffer succeeded")
	}
	// Nothing was created.
	if _, err := st.JetStream().Stream(ctx, schema.StreamRequests); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream after a refused Init: %v, want not found", err)
	}
}

func TestCheckWithoutInit(t *testing.T) {
	st := newStore(t, false)
	err := bus.Check(testCtx(t, 10*time.Second), st.JetStream())
	if !errors.Is(err, bus.ErrStoreMissing) {
		t.Fatalf("Check before Init = %v, want ErrStoreMissing", err)
	}
	for _, name := range allStores {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name missing %s: %v", name, err)
		}
	}
	if !strings.Contains(err.Error(), "restartcoord init") {
		t.Errorf("error does not say how to fix it: %v", err)
	}
	// Check never creates anything.
	names := st.JetStream().StreamNames(testCtx(t, 5*time.Second))
	for n := range names.Name() {
		t.Errorf("Check created stream %s", n)
	}
	if err := names.Err(); err != nil {
		t.Error(err)
	}
}

func TestInitCheckIdempotent(t *testing.T) {
	st := newStore(t, false)
	ctx := testCtx(t, 20*time.Second)
	js := st.JetStream()
	if err := bus.Init(ctx, js, bus.DefaultStoreConfig()); err != nil {
		t.Fatal(err)
	}
	if err := bus.Check(ctx, js); err != nil {
		t.Fatalf("Check after Init: %v", err)
	}
	// Data written between two Inits survives the second one.
	seq, err := st.Append(ctx, "n1", "", &schema.JournalEntry{V: 1, Op: "task.create"})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, schema.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "n1", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Init(ctx, js, bus.DefaultStoreConfig()); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	if err := bus.Check(ctx, js); err != nil {
		t.Fatalf("Check after second Init: %v", err)
	}
	if last, err := st.LastSeq(ctx, "n1"); err != nil || last != seq {
		t.Errorf("journal after second Init: last %d, %v; want %d", last, err, seq)
	}
	if e, err := kv.Get(ctx, "n1"); err != nil || string(e.Value()) != `{"v":1}` {
		t.Errorf("config after second Init: %v", err)
	}
	// The request stream has the contract's settings.
	s, err := js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy || cfg.Discard != jetstream.DiscardNew || !cfg.DiscardNewPerSubject ||
		cfg.MaxMsgsPerSubject != 100 || cfg.Duplicates != 300*time.Second || cfg.MaxAge <= 300*time.Second {
		t.Errorf("request stream config %+v", cfg)
	}
}

func TestCheckNamesWrongStore(t *testing.T) {
	replaceStream := func(cfg jetstream.StreamConfig) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			if err := js.DeleteStream(ctx, cfg.Name); err != nil {
				return err
			}
			_, err := js.CreateStream(ctx, cfg)
			return err
		}
	}
	tests := []struct {
		name     string
		sabotage func(context.Context, jetstream.JetStream) error
		want     []string // all in the error
		notWant  string   // a store that is fine, not named
	}{
		{
			name: "requests with limits retention",
			sabotage: replaceStream(jetstream.StreamConfig{Name: schema.StreamRequests,
				Subjects: []string{schema.RequestsSubjects}, Retention: jetstream.LimitsPolicy}),
			want:    []string{schema.StreamRequests, "retention"},
			notWant: schema.StreamJournal,
		},
		{
			name: "requests without per-subject discard",
			sabotage: replaceStream(jetstream.StreamConfig{Name: schema.StreamRequests,
				Subjects: []string{schema.RequestsSubjects}, Retention: jetstream.WorkQueuePolicy}),
			want:    []string{schema.StreamRequests, "per subject"},
			notWant: schema.StreamJournal,
		},
		{
			name: "journal capturing other subjects",
			sabotage: replaceStream(jetstream.StreamConfig{Name: schema.StreamJournal,
				Subjects: []string{"orch.v1.jrnl.>"}}),
			want:    []string{schema.StreamJournal, "captures"},
			notWant: schema.StreamRequests,
		},
		{
			name: "audit that allows purge",
			sabotage: replaceStream(jetstream.StreamConfig{Name: schema.StreamAudit,
				Subjects: []string{schema.AuditSubjects}}),
			want:    []string{schema.StreamAudit, "purge"},
			notWant: schema.StreamRequests,
		},
		{
			name: "events missing",
			sabotage: func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteStream(ctx, schema.StreamEvents)
			},
			want:    []string{schema.StreamEvents},
			notWant: schema.StreamAlerts,
		},
		{
			name: "lease bucket without per-key TTLs",
			sabotage: func(ctx context.Context, js jetstream.JetStream) error {
				if err := js.DeleteKeyValue(ctx, schema.BucketLeases); err != nil {
					return err
				}
				_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schema.BucketLeases})
				return err
			},
			want:    []string{schema.BucketLeases, "TTL"},
			notWant: schema.BucketNodes,
		},
		{
			name: "snapshot store missing",
			sabotage: func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteObjectStore(ctx, schema.ObjectSnapshots)
			},
			want:    []string{schema.ObjectSnapshots},
			notWant: schema.BucketLeases,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t, true)
			ctx := testCtx(t, 10*time.Second)
			js := st.JetStream()
			if err := tc.sabotage(ctx, js); err != nil {
				t.Fatalf("sabotage: %v", err)
			}
			err := bus.Check(ctx, js)
			if !errors.Is(err, bus.ErrStoreMissing) {
				t.Fatalf("Check = %v, want ErrStoreMissing", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error names %s, which is fine: %v", tc.notWant, err)
			}
		})
	}
}

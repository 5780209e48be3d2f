package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// StoreConfig is what `restartcoord init` creates.
type StoreConfig struct {
	// Replicas of every stream, bucket and object store (1; 3 on a cluster).
	Replicas int
	// RequestBuffer is the per-client request buffer (100).
	RequestBuffer int64
	// BufferExpiration is how long a buffered request waits (300 s).
	BufferExpiration time.Duration
	// HistoryAge is how long restart history, events and alerts are kept (90 days).
	HistoryAge time.Duration
}

// DefaultStoreConfig is the contract's defaults, single replica.
func DefaultStoreConfig() StoreConfig {
	return StoreConfig{Replicas: 1, RequestBuffer: 100, BufferExpiration: 300 * time.Second, HistoryAge: 90 * 24 * time.Hour}
}

// Validate checks the settings.
func (c StoreConfig) Validate() error {
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("bus: replicas must be 1..5, got %d", c.Replicas)
	}
	if c.RequestBuffer < 1 || c.RequestBuffer > 100000 {
		return fmt.Errorf("bus: request buffer must be 1..100000, got %d", c.RequestBuffer)
	}
	if c.BufferExpiration < time.Second {
		return fmt.Errorf("bus: buffer expiration must be at least 1s, got %s", c.BufferExpiration)
	}
	if c.HistoryAge < time.Hour {
		return fmt.Errorf("bus: history age must be at least 1h, got %s", c.HistoryAge)
	}
	return nil
}

// requestMaxAge keeps a request a little past its expiration, so the worker
// answers it EXPIRED instead of letting it vanish.
func (c StoreConfig) requestMaxAge() time.Duration {
	return c.BufferExpiration + max(c.BufferExpiration/10, 5*time.Second)
}

func (c StoreConfig) streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name: schema.StreamRequests, Subjects: []string{schema.RequestsSubjects},
			Description: "client requests buffered per (node, client) until the node's worker answers them",
			Retention:   jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
			MaxMsgsPerSubject: c.RequestBuffer, Duplicates: c.BufferExpiration, MaxAge: c.requestMaxAge(),
			Storage: jetstream.FileStorage, Replicas: c.Replicas,
		},
		{
			Name: schema.StreamJournal, Subjects: []string{schema.JournalSubjects},
			Description: "task journal per node: every effect with the request id that caused it and the reply sent",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: c.Replicas, AllowDirect: true,
			// A batch of requests' effects is written all or none.
			AllowAtomicPublish: true,
		},
		{
			Name: schema.StreamEvents, Subjects: []string{schema.EventsSubjects},
			Description: "restart lifecycle and roll progress; restart history",
			Retention:   jetstream.LimitsPolicy, MaxAge: c.HistoryAge, Storage: jetstream.FileStorage, Replicas: c.Replicas,
			AllowDirect: true,
		},
		{
			Name: schema.StreamAlerts, Subjects: []string{schema.AlertsSubjects},
			Description: "alerts by severity and kind",
			Retention:   jetstream.LimitsPolicy, MaxAge: c.HistoryAge, Storage: jetstream.FileStorage, Replicas: c.Replicas,
		},
		{
			Name: schema.StreamAudit, Subjects: []string{schema.AuditSubjects},
			Description: "who did what, with what parameters and result; no delete, no purge",
			Retention:   jetstream.LimitsPolicy, DenyDelete: true, DenyPurge: true, Storage: jetstream.FileStorage,
			Replicas: c.Replicas,
		},
	}
}

func (c StoreConfig) buckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: schema.BucketNodes, Description: "node registry (auto-join)", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: schema.BucketLeases, Description: "TTL leases: node ownership, coordinator leader", History: 1,
			Storage: jetstream.FileStorage, Replicas: c.Replicas, LimitMarkerTTL: time.Minute},
		{Bucket: schema.BucketConfig, Description: "node configuration with config_version", History: 10,
			Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: schema.BucketCoord, Description: "coordinator state: rolls, escalation, breaker", History: 1,
			Storage: jetstream.FileStorage, Replicas: c.Replicas},
	}
}

func (c StoreConfig) objects() []jetstream.ObjectStoreConfig {
	return []jetstream.ObjectStoreConfig{
		{Bucket: schema.ObjectSnapshots, Description: "checksummed state snapshots, 10 kept per node",
			Storage: jetstream.FileStorage, Replicas: c.Replicas},
	}
}

// Init creates (or updates to the same settings) every stream, bucket and
// object store. It is idempotent.
func Init(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	for _, sc := range cfg.streams() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("bus: init stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range cfg.buckets() {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("bus: init bucket %s: %w", kc.Bucket, err)
		}
	}
	for _, oc := range cfg.objects() {
		if _, err := js.CreateOrUpdateObjectStore(ctx, oc); err != nil {
			return fmt.Errorf("bus: init object store %s: %w", oc.Bucket, err)
		}
	}
	_, err := AlertsConsumer(ctx, js)
	return err
}

// ErrStoreMissing is returned by Check when a stream, bucket or object store
// is absent or has the wrong settings.
var ErrStoreMissing = errors.New("bus: JetStream store not initialised")

// Check verifies that every stream, bucket and object store exists with the
// settings the system relies on. It never creates anything: a store opened
// with the wrong encryption key looks empty, and re-creating it would bury
// the real data, so a component refuses to start instead.
func Check(ctx context.Context, js jetstream.JetStream) error {
	var problems []string
	want := DefaultStoreConfig()
	for _, sc := range want.streams() {
		s, err := js.Stream(ctx, sc.Name)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("bus: checking the store: stream %s: %w", sc.Name, err) // not answering: not a verdict
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("stream %s: %v", sc.Name, err))
			continue
		}
		got := s.CachedInfo().Config
		if !slices.Equal(got.Subjects, sc.Subjects) {
			problems = append(problems, fmt.Sprintf("stream %s captures %v, want %v", sc.Name, got.Subjects, sc.Subjects))
		}
		if got.Retention != sc.Retention {
			problems = append(problems, fmt.Sprintf("stream %s has retention %s, want %s", sc.Name, got.Retention, sc.Retention))
		}
		if sc.DiscardNewPerSubject && (!got.DiscardNewPerSubject || got.Discard != jetstream.DiscardNew || got.MaxMsgsPerSubject < 1) {
			problems = append(problems, fmt.Sprintf("stream %s must discard new messages per subject with a per-subject limit", sc.Name))
		}
		if sc.AllowAtomicPublish && !got.AllowAtomicPublish {
			problems = append(problems, fmt.Sprintf("stream %s must allow atomic batch publish (restartcoord init updates it)", sc.Name))
		}
		if sc.DenyPurge && (!got.DenyPurge || !got.DenyDelete) {
			problems = append(problems, fmt.Sprintf("stream %s must deny delete and purge", sc.Name))
		}
	}
	for _, kc := range want.buckets() {
		kv, err := js.KeyValue(ctx, kc.Bucket)
		if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("bus: checking the store: bucket %s: %w", kc.Bucket, err)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("bucket %s: %v", kc.Bucket, err))
			continue
		}
		if kc.LimitMarkerTTL > 0 {
			st, err := kv.Status(ctx)
			if err != nil {
				problems = append(problems, fmt.Sprintf("bucket %s: %v", kc.Bucket, err))
			} else if !st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.AllowMsgTTL {
				problems = append(problems, fmt.Sprintf("bucket %s does not allow per-key TTLs", kc.Bucket))
			}
		}
	}
	for _, oc := range want.objects() {
		if _, err := js.ObjectStore(ctx, oc.Bucket); err != nil {
			if !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("bus: checking the store: object store %s: %w", oc.Bucket, err)
			}
			problems = append(problems, fmt.Sprintf("object store %s: %v", oc.Bucket, err))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s; run `restartcoord init` against this NATS (refusing to create them here: a store opened with the wrong key looks empty)",
			ErrStoreMissing, strings.Join(problems, "; "))
	}
	return nil
}

package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// Store is the JetStream side of a node: journal, snapshots, buffered
// requests, events. It satisfies node's small interfaces.
type Store struct {
	conn *Conn
	js   jetstream.JetStream
}

// NewStore wraps a connection's JetStream.
func NewStore(c *Conn) (*Store, error) {
	js, err := jetstream.New(c.Conn)
	if err != nil {
		return nil, err
	}
	return &Store{conn: c, js: js}, nil
}

// JetStream exposes the JetStream context (for init and checks).
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Conn is the connection the store uses.
func (s *Store) Conn() *Conn { return s.conn }

// --- journal -----------------------------------------------------------------

// Append writes one journal entry and returns its stream sequence once
// JetStream has stored it (and, with sync_interval always, synced it). A
// non-empty msgID makes a retried append (after a lost acknowledgement) a
// no-op that returns the original sequence.
func (s *Store) Append(ctx context.Context, nodeID, msgID string, e *schema.JournalEntry) (uint64, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := s.js.Publish(ctx, schema.JournalSubject(nodeID), data, opts...)
	if err != nil {
		return 0, fmt.Errorf("bus: journal append: %w", err)
	}
	if ack.Duplicate {
		return ack.Sequence, ErrJournalDuplicate
	}
	return ack.Sequence, nil
}

// ErrJournalDuplicate: the journal already holds an entry with this message
// id, stored by an earlier try (whose acknowledgement was lost), or by an
// earlier worker whose write landed after this one restored: then what it
// holds is not what this caller wrote. The sequence returned with it is the
// stored entry's (Append) or the node's last (AppendBatch).
var ErrJournalDuplicate = errors.New("bus: journal already holds this message id")

// LastSeq is the stream sequence of the node's newest journal entry (0:
// none), read at the stream's leader: Replay trusts it to know it read all.
func (s *Store) LastSeq(ctx context.Context, nodeID string) (uint64, error) {
	m, err := LastMsg(ctx, s.js, schema.StreamJournal, schema.JournalSubject(nodeID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("bus: journal last: %w", err)
	}
	return m.Sequence, nil
}

// Replay calls fn for every journal entry of the node after afterSeq, in
// order, and returns the number of entries.
func (s *Store) Replay(ctx context.Context, nodeID string, afterSeq uint64, fn func(seq uint64, e *schema.JournalEntry) error) (int, error) {
	last, err := s.LastSeq(ctx, nodeID)
	if err != nil || last <= afterSeq {
		return 0, err
	}
	n, seen := 0, uint64(0)
	err = ReadAll(ctx, s.js, schema.StreamJournal, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.JournalSubject(nodeID)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: afterSeq + 1,
	}, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		seen = md.Sequence.Stream
		var e schema.JournalEntry
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			return schema.Errorf(schema.CodeStateCorruption, "journal entry %d of %s unreadable: %v", seen, nodeID, err)
		}
		if err := fn(seen, &e); err != nil {
			return err
		}
		n++
		return nil
	})
	var se *schema.Error
	switch {
	case errors.As(err, &se):
		return n, err
	case err != nil:
		return n, fmt.Errorf("bus: journal replay: %w", err)
	case seen < last:
		return n, fmt.Errorf("bus: journal replay of %s stopped before sequence %d", nodeID, last)
	}
	return n, nil
}

// Compact removes the node's journal entries up to and including throughSeq.
func (s *Store) Compact(ctx context.Context, nodeID string, throughSeq uint64) error {
	if throughSeq == 0 {
		return nil
	}
	st, err := s.js.Stream(ctx, schema.StreamJournal)
	if err != nil {
		return err
	}
	return st.Purge(ctx, jetstream.WithPurgeSubject(schema.JournalSubject(nodeID)), jetstream.WithPurgeSequence(throughSeq+1))
}

// --- snapshots ---------------------------------------------------------------

func snapshotName(nodeID, id string) string { return nodeID + "/" + id }

func (s *Store) objects(ctx context.Context) (jetstream.ObjectStore, error) {
	return s.js.ObjectStore(ctx, schema.ObjectSnapshots)
}

// PutSnapshot stores a snapshot, reads the stored bytes back and checks
// they are the bytes written (the object store also checks its own SHA-256
// digest of them on the way back). The snapshot's checksum was computed over
// the very payload bytes written, so a second hash or decode adds nothing.
func (s *Store) PutSnapshot(ctx context.Context, snap *schema.Snapshot, tasks, sessions int) (schema.SnapshotInfo, error) {
	obs, err := s.objects(ctx)
	if err != nil {
		return schema.SnapshotInfo{}, err
	}
	head, err := snap.MarshalHeader()
	if err != nil {
		return schema.SnapshotInfo{}, err
	}
	// s2 compresses JSON several times at over a GB/s: fewer bytes to
	// sync, send and read back. The checksum covers the uncompressed state.
	packed, err := compressParts(head, snap.Payload)
	if err != nil {
		return schema.SnapshotInfo{}, err
	}
	size := len(head) + len(snap.Payload)
	info := schema.SnapshotInfo{SnapshotID: snap.SnapshotID, NodeID: snap.NodeID, TakenAt: snap.TakenAt,
		Trigger: snap.Trigger, SchemaVersion: snap.SchemaVersion, JournalSeq: snap.JournalSeq,
		SizeBytes: int64(size), StoredBytes: int64(len(packed)), Tasks: tasks, Sessions: sessions, Checksum: snap.Checksum}
	meta := map[string]string{"encoding": "s2", "format": "framed", "size": strconv.Itoa(size),
		"taken_at": snap.TakenAt.Format(time.RFC3339Nano), "trigger": snap.Trigger,
		"schema_version": strconv.Itoa(snap.SchemaVersion), "journal_seq": strconv.FormatUint(snap.JournalSeq, 10),
		"tasks": strconv.Itoa(tasks), "sessions": strconv.Itoa(sessions), "checksum": snap.Checksum,
	}
	name := snapshotName(snap.NodeID, snap.SnapshotID)
	chunk := uint32(min(max(s.conn.MaxPayload()/2, 128<<10), 4<<20))
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: meta,
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunk}}, bytes.NewReader(packed)); err != nil {
		return info, fmt.Errorf("bus: store snapshot: %w", err)
	}
	back, err := readBack(ctx, obs, name)
	if err != nil {
		return info, fmt.Errorf("bus: verify snapshot after write: %w", err)
	}
	if !bytes.Equal(back, packed) {
		return info, schema.Errorf(schema.CodeStateCorruption, "snapshot %s read back differs from what was written (%d bytes read, %d written)",
			snap.SnapshotID, len(back), len(packed))
	}
	return info, nil
}

// readBack reads an object just written. On a replicated store the read
// can reach a replica that has not applied the write yet ("not found" for
// a few milliseconds): that, and only that, is tried again, for up to 5 s.
func readBack(ctx context.Context, obs jetstream.ObjectStore, name string) ([]byte, error) {
	deadline := time.Now().Add(5 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		back, _, err := readObject(ctx, obs, name)
		if !errors.Is(err, jetstream.ErrObjectNotFound) || time.Now().After(deadline) {
			return back, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// compressParts returns the s2 block of head followed by payload: the same
// block format as s2.Encode of the two joined, made of blocks compressed on
// every core (s2.ConcatBlocks), without joining them first.
func compressParts(head, payload []byte) ([]byte, error) {
	const minPiece = 1 << 20
	n := max(1, min(runtime.GOMAXPROCS(0), len(payload)/minPiece))
	pieces := make([][]byte, n+1)
	pieces[0] = s2.Encode(nil, head)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			lo, hi := len(payload)*i/n, len(payload)*(i+1)/n
			pieces[i+1] = s2.Encode(nil, payload[lo:hi])
		})
	}
	wg.Wait()
	return s2.ConcatBlocks(nil, pieces...)
}

// readObject reads a whole object; the object store checks its digest.
func readObject(ctx context.Context, obs jetstream.ObjectStore, name string) ([]byte, *jetstream.ObjectInfo, error) {
	res, err := obs.Get(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, int(min(info.Size, 1<<30))+bytes.MinRead))
	if _, err := buf.ReadFrom(res); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), info, nil
}

// GetSnapshot reads and verifies one snapshot.
func (s *Store) GetSnapshot(ctx context.Context, nodeID, id string) (*schema.Snapshot, error) {
	obs, err := s.objects(ctx)
	if err != nil {
		return nil, err
	}
	data, info, err := readObject(ctx, obs, snapshotName(nodeID, id))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, schema.Errorf(schema.CodeNotFound, "no snapshot %s for node %s", id, nodeID)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: read snapshot %s: %w", id, err)
	}
	switch enc := info.Metadata["encoding"]; enc {
	case "":
	case "s2":
		if data, err = s2.Decode(nil, data); err != nil {
			return nil, schema.Errorf(schema.CodeStateCorruption, "snapshot %s does not decompress: %v", id, err)
		}
	default:
		return nil, schema.Errorf(schema.CodeStateCorruption, "snapshot %s has unknown encoding %q", id, enc)
	}
	return schema.UnmarshalSnapshot(data)
}

// ListSnapshots lists the node's snapshots, newest first, numbered from 1.
func (s *Store) ListSnapshots(ctx context.Context, nodeID string) ([]schema.SnapshotInfo, error) {
	obs, err := s.objects(ctx)
	if err != nil {
		return nil, err
	}
	all, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bus: list snapshots: %w", err)
	}
	var out []schema.SnapshotInfo
	prefix := nodeID + "/"
	for _, o := range all {
		if o.Deleted || !strings.HasPrefix(o.Name, prefix) {
			continue
		}
		m := o.Metadata
		taken, _ := time.Parse(time.RFC3339Nano, m["taken_at"])
		sv, _ := strconv.Atoi(m["schema_version"])
		seq, _ := strconv.ParseUint(m["journal_seq"], 10, 64)
		tasks, _ := strconv.Atoi(m["tasks"])
		sessions, _ := strconv.Atoi(m["sessions"])
		size, err := strconv.ParseInt(m["size"], 10, 64)
		if err != nil {
			size = int64(o.Size)
		}
		out = append(out, schema.SnapshotInfo{SnapshotID: strings.TrimPrefix(o.Name, prefix), NodeID: nodeID,
			TakenAt: taken, Trigger: m["trigger"], SchemaVersion: sv, JournalSeq: seq, SizeBytes: size, StoredBytes: int64(o.Size),
			Tasks: tasks, Sessions: sessions, Checksum: m["checksum"]})
	}
	slices.SortFunc(out, func(a, b schema.SnapshotInfo) int {
		if c := b.TakenAt.Compare(a.TakenAt); c != 0 {
			return c
		}
		return strings.Compare(b.SnapshotID, a.SnapshotID)
	})
	for i := range out {
		out[i].Index = i + 1
	}
	return out, nil
}

// DeleteSnapshot removes one snapshot.
func (s *Store) DeleteSnapshot(ctx context.Context, nodeID, id string) error {
	obs, err := s.objects(ctx)
	if err != nil {
		return err
	}
	return obs.Delete(ctx, snapshotName(nodeID, id))
}

// --- events ------------------------------------------------------------------

// PublishDurable publishes v as JSON to a stream subject and waits for the
// stream's acknowledgement.
func (s *Store) PublishDurable(ctx context.Context, subj string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.js.Publish(ctx, subj, data)
	return err
}

// PublishDurableOnce is PublishDurable under an idempotency key: within the
// stream's duplicate window (2 min by default) a second publish with the
// same msgID, a retry whose first try landed unacknowledged or the same
// effect made again, is acknowledged as a duplicate and not stored.
func (s *Store) PublishDurableOnce(ctx context.Context, subj, msgID string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.js.Publish(ctx, subj, data, jetstream.WithMsgID(msgID))
	return err
}

// Keep publishes v as JSON to a stream subject under msgID and waits for the
// stream's acknowledgement, trying again with backoff (100 ms growing to
// 2 s, each try bounded by keepTry) while it gets none, until ctx ends: a
// server lost or a leader election only delays it. The message id makes a
// try that landed but whose acknowledgement was lost a duplicate the stream
// drops on the next try (within the stream's duplicate window, 2 min by
// default), so v is kept once.
func (s *Store) Keep(ctx context.Context, subj, msgID string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var last error // the last try's own error, not a timeout: what JetStream said
	err = backoff.Retry(func() error {
		tctx, cancel := context.WithTimeout(ctx, keepTry)
		defer cancel()
		_, err := s.js.Publish(tctx, subj, data, jetstream.WithMsgID(msgID))
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			last = err
		}
		return err
	}, natsBackOff(ctx, 0))
	if err != nil && last != nil {
		err = fmt.Errorf("%w (last answer: %v)", err, last)
	}
	return err
}

// keepTry bounds one try of Keep.
const keepTry = 5 * time.Second

// Publish sends v as JSON on a core subject (no acknowledgement).
func (s *Store) Publish(subj string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.conn.Publish(subj, data)
}

// ReadSubject calls fn with every message kept on subj in stream, oldest
// first; subj may hold wildcards.
func (s *Store) ReadSubject(ctx context.Context, stream, subj string, fn func(data []byte) error) error {
	return ReadAll(ctx, s.js, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}},
		func(m jetstream.Msg) error { return fn(m.Data()) })
}

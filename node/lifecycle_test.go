package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/chaos"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

func TestNodeJoinsAndHeartbeats(t *testing.T) {
	e := newEnv(t)
	hbs := e.heartbeats("n1", 16)
	cfg := e.fastConfig("n1")
	cfg.Group, cfg.Priority = "blue", 7
	e.startNode(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, _ := e.bs.JetStream().KeyValue(ctx, schema.BucketNodes)
	entry, err := kv.Get(ctx, "n1")
	if err != nil {
		t.Fatalf("node not in the registry: %v", err)
	}
	var info schema.NodeInfo
	if err := json.Unmarshal(entry.Value(), &info); err != nil || info.Group != "blue" || info.Priority != 7 || info.PID == 0 {
		t.Fatalf("registry entry %s (%v)", entry.Value(), err)
	}
	var last schema.Heartbeat
	waitFor(t, 5*time.Second, "a healthy heartbeat", func() bool {
		select {
		case m := <-hbs:
			_ = json.Unmarshal(m.Data, &last)
			return last.Healthy
		default:
			return false
		}
	})
	if last.NodeID != "n1" || last.Group != "blue" || last.Priority != 7 || last.WorkerPID == 0 || last.Seq == 0 || last.Phase != schema.PhaseIdle {
		t.Fatalf("heartbeat %+v", last)
	}
}

// A node cut off from NATS publishes no heartbeat while it reconnects: the
// client would buffer it and send it after the reconnect, late, saying
// "unhealthy" only because it was disconnected when written, and a
// coordinator would count that as news (one of the ways a partitioned NATS
// server made the breaker open, found by the chaos suite).
func TestNoHeartbeatWrittenWhileReconnecting(t *testing.T) {
	e := newEnv(t)
	px, err := chaos.NewProxy("n1-nats", "127.0.0.1:0", strings.TrimPrefix(e.url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	hbs := e.heartbeats("n1", 1024)
	cfg := e.fastConfig("n1")
	cfg.NATS.URL = "nats://" + px.Addr()
	e.startNode(cfg)
	// 7 s: the client notices at about 4 s (a ping a second, 3 unanswered),
	// then reconnects for about 3 s before the heal.
	px.Blackhole()
	time.Sleep(7 * time.Second)
	healed := time.Now()
	px.Heal()
	var after []schema.Heartbeat
	waitFor(t, 15*time.Second, "heartbeats again after the heal", func() bool {
		for {
			select {
			case m := <-hbs:
				var hb schema.Heartbeat
				if err := json.Unmarshal(m.Data, &hb); err != nil {
					t.Fatal(err)
				}
				if time.Now().After(healed) {
					after = append(after, hb)
				}
			default:
				return len(after) >= 5
			}
		}
	})
	for _, hb := range after {
		// The outage's last second is left out: a heartbeat written just
		// before the heal may be in flight when it comes.
		if hb.Timestamp.Before(healed.Add(-time.Second)) {
			t.Fatalf("heartbeat %d written at %s, %s before the heal, delivered after it (healthy: %v)",
				hb.Seq, hb.Timestamp.Format("15:04:05.000"), healed.Sub(hb.Timestamp).Round(time.Millisecond), hb.Healthy)
		}
	}
}

func TestPeriodicSnapshotsArePrunedAndCompactTheJournal(t *testing.T) {
	e := newEnv(t)
	cfg := e.fastConfig("n1")
	cfg.SnapshotInterval = 150 * time.Millisecond
	cfg.KeepSnapshots = 3
	cfg.MaxStateSize = 2048 // so the state-size alert fires
	e.startNode(cfg)
	c := e.client("c1", "n1")
	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 5 {
		createTasks(t, l, 10, 2, func(int) schema.TaskCreateArgs { return schema.TaskCreateArgs{Title: "periodic"} }, c)
		_ = round
		time.Sleep(200 * time.Millisecond)
	}
	var list []schema.SnapshotInfo
	waitFor(t, 10*time.Second, "periodic snapshots covering all 50 tasks, pruned to 3", func() bool {
		list, _ = e.bs.ListSnapshots(ctx, "n1")
		return len(list) == 3 && list[0].Tasks == 50
	})
	if len(list) != 3 {
		t.Fatalf("%d snapshots kept, want 3", len(list))
	}
	for _, s := range list {
		if s.Trigger != "periodic" {
			t.Fatalf("snapshot %+v: want periodic", s)
		}
	}
	// The journal is compacted behind the second newest snapshot.
	n, err := e.bs.Replay(ctx, "n1", 0, func(seq uint64, _ *schema.JournalEntry) error {
		if seq <= list[1].JournalSeq {
			return errors.New("an entry behind the second newest snapshot survived compaction")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d journal entries left after compaction behind seq %d", n, list[1].JournalSeq)
	awaitAlert(t, e, schema.AlertStateSize, "n1", firing, 1) // a state above the maximum
	// Restore from the newest snapshot plus what is left of the journal is whole.
	e.restart("n1", map[string]any{"graceful": false})
	l.check(t, c)
}

func TestNodeRefusesAStoreThatWasNotInitialised(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.DefaultEmbeddedConfig(filepath.Join(t.TempDir(), "js")))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	// Only one of the streams exists, as after a store opened with the wrong key.
	nc, _ := nats.Connect(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schema.StreamAudit, Subjects: []string{schema.AuditSubjects}}); err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig("n1")
	cfg.NATS.URL, cfg.LogDir = srv.URL(), t.TempDir()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = sup.Run(ctx, nil)
	if !errors.Is(err, bus.ErrStoreMissing) {
		t.Fatalf("got %v, want ErrStoreMissing", err)
	}
	names := js.StreamNames(ctx)
	n := 0
	for range names.Name() {
		n++
	}
	if n != 1 {
		t.Fatalf("the refused start created streams: %d now", n)
	}
}

package node_test

// A whole node (supervisor and worker) killed with -9 and started again at
// once, as systemd does: the new supervisor proves the holder of the node-id
// lease dead and takes the lease by compare-and-set on its revision, without
// the heartbeat probe and without waiting for the TTL; holders it cannot
// prove dead are still waited out, and live ones still refuse it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/node"
	"github.com/restartcoord/restartcoord/schema"
)

// nodeProcessEnv, set in the environment of this test binary, makes it run
// one supervisor (nodeProcessConfig, as JSON) until SIGTERM or SIGKILL: a
// whole node in a process of its own, as `restartcoord node` runs, for the
// tests and the benchmark that kill it. The worker it starts is this binary
// again, which TestMain turns into a worker.
const nodeProcessEnv = "RESTARTCOORD_TEST_NODE_PROCESS"

type nodeProcessConfig struct {
	NodeID       string
	URL          string
	LogDir       string
	LeaseTTL     time.Duration
	Heartbeat    time.Duration
	FastTakeover bool
}

func init() {
	if v := os.Getenv(nodeProcessEnv); v != "" && !node.IsWorker() {
		os.Exit(runNodeProcess(v))
	}
}

func runNodeProcess(v string) int {
	_ = os.Unsetenv(nodeProcessEnv) // not for the worker
	var pc nodeProcessConfig
	if err := json.Unmarshal([]byte(v), &pc); err != nil {
		fmt.Fprintln(os.Stderr, "node process:", err)
		return 2
	}
	cfg := node.DefaultConfig(pc.NodeID)
	cfg.NATS.URL, cfg.LogDir, cfg.LeaseTTL, cfg.FastTakeover = pc.URL, pc.LogDir, pc.LeaseTTL, pc.FastTakeover
	cfg.HeartbeatInterval = pc.Heartbeat
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node process:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := sup.Run(ctx, nil); err != nil {
		fmt.Fprintln(os.Stderr, "node process:", err)
		return 1
	}
	return 0
}

// nodeProcess is a whole node running as a child of the test.
type nodeProcess struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
}

func (p *nodeProcess) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.Write(b)
}

func (p *nodeProcess) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// startNodeProcess starts a whole node; the test's end stops it with
// SIGTERM (a drain) if it is still running.
func startNodeProcess(tb testing.TB, pc nodeProcessConfig) *nodeProcess {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	v, _ := json.Marshal(pc)
	p := &nodeProcess{cmd: exec.Command(exe), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), nodeProcessEnv+"="+string(v))
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(60 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			tb.Errorf("node process %d did not stop within 60 s of SIGTERM", p.cmd.Process.Pid)
		}
	})
	return p
}

// kill9 kills the node process with SIGKILL (its worker dies with it, by
// its parent-death signal) and reaps it, as a service manager does.
func (p *nodeProcess) kill9(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		tb.Fatalf("node process %d not reaped 10 s after SIGKILL", p.cmd.Process.Pid)
	}
}

// healthyWorker polls the node's health until it is healthy with a worker
// other than old, and returns that worker's PID.
func healthyWorker(tb testing.TB, conn *bus.Conn, nodeID string, old int, within time.Duration) int {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		var h schema.Health
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := conn.RequestJSON(ctx, schema.NodeSubject(nodeID, schema.OpHealth), nil, nil, &h)
		cancel()
		if err == nil && h.Healthy && h.WorkerPID != 0 && h.WorkerPID != old {
			return h.WorkerPID
		}
		if time.Now().After(deadline) {
			tb.Fatalf("node %s not healthy with a new worker within %s (last: %+v, %v)", nodeID, within, h, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaseAt reads the node-id lease at the bucket's leader: its record and
// revision.
func leaseAt(t *testing.T, e *env, nodeID string) (node.Holder, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, rev, err := bus.KVGet(ctx, e.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode(nodeID))
	if err != nil {
		t.Fatalf("reading the lease of %s: %v", nodeID, err)
	}
	h, ok := node.ParseHolder(v)
	if !ok {
		t.Fatalf("lease of %s holds %q, not a holder record", nodeID, v)
	}
	return h, rev
}

var takeoverLine = regexp.MustCompile(`msg="node id lease taken over from a dead holder".* from_revision=(\d+) to_revision=(\d+)`)

// TestWholeNodeKilledAndRestartedTakesItsLeaseAtOnce: a node process
// SIGKILLed and started again at once takes its lease from the dead one by
// compare-and-set on the dead one's last revision. The lease's TTL is a
// minute, so a wait for it would outlast the test's bound; but the test
// checks how, not how fast: the new process logs the takeover from the
// revision the dead one left, its lease is at a later revision, and it
// neither waited for the expiry nor probed for heartbeats.
func TestWholeNodeKilledAndRestartedTakesItsLeaseAtOnce(t *testing.T) {
	e := newEnv(t)
	pc := nodeProcessConfig{NodeID: "n1", URL: e.url, LogDir: filepath.Join(e.dir, "logs"),
		LeaseTTL: time.Minute, Heartbeat: 100 * time.Millisecond, FastTakeover: true}
	first := startNodeProcess(t, pc)
	worker := healthyWorker(t, e.conn, "n1", 0, 30*time.Second)

	first.kill9(t)
	dead, deadRev := leaseAt(t, e, "n1")
	if dead.PID != first.cmd.Process.Pid {
		t.Fatalf("lease left by the killed node names pid %d, want %d", dead.PID, first.cmd.Process.Pid)
	}
	started := time.Now()
	second := startNodeProcess(t, pc)
	healthyWorker(t, e.conn, "n1", worker, 30*time.Second)
	t.Logf("killed node restarted at once: healthy %s after its start", time.Since(started).Round(time.Millisecond))

	now, rev := leaseAt(t, e, "n1")
	if now.PID != second.cmd.Process.Pid || now.Instance == dead.Instance {
		t.Fatalf("lease holder %+v, want the new node process %d", now, second.cmd.Process.Pid)
	}
	m := takeoverLine.FindStringSubmatch(second.log())
	if m == nil {
		t.Fatalf("the new node did not log a takeover; its log:\n%s", second.log())
	}
	from, _ := strconv.ParseUint(m[1], 10, 64)
	to, _ := strconv.ParseUint(m[2], 10, 64)
	if from != deadRev || to <= deadRev || to > rev {
		t.Fatalf("took over from revision %d to %d; want from the dead node's %d, to one after it and at most the lease's %d now",
			from, to, deadRev, rev)
	}
	for _, waited := range []string{"waiting for its lease to expire", "heartbeats arrive"} {
		if strings.Contains(second.log(), waited) {
			t.Fatalf("the new node took the slow path (%q); its log:\n%s", waited, second.log())
		}
	}
}

// TestLiveNodeProcessIsNotTakenOver: a second supervisor with the id of a
// live node process (on this machine, so its record is readable) finds it
// alive and refuses to start; the live node keeps its lease.
func TestLiveNodeProcessIsNotTakenOver(t *testing.T) {
	e := newEnv(t)
	pc := nodeProcessConfig{NodeID: "n1", URL: e.url, LogDir: filepath.Join(e.dir, "logs"),
		LeaseTTL: 5 * time.Second, Heartbeat: 100 * time.Millisecond, FastTakeover: true}
	live := startNodeProcess(t, pc)
	healthyWorker(t, e.conn, "n1", 0, 30*time.Second)
	_, before := leaseAt(t, e, "n1")

	sup, err := node.NewSupervisor(e.fastConfig("n1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sup.Run(ctx, nil); !errors.Is(err, node.ErrNodeIDTaken) {
		t.Fatalf("second supervisor beside a live node process: %v, want ErrNodeIDTaken", err)
	}
	if st := sup.NodeIDStart(); st != (node.NodeIDStart{}) {
		t.Fatalf("the refused supervisor says it took the id: %+v", st)
	}
	h, after := leaseAt(t, e, "n1")
	if h.PID != live.cmd.Process.Pid || after < before {
		t.Fatalf("lease after the refusal: %+v at revision %d (was %d), want the live node's", h, after, before)
	}
}

// deadRecord is the lease record of a process that existed on this machine
// and is gone: a child of the test, killed and reaped.
func deadRecord(t *testing.T, instance string) node.Holder {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h, err := node.ProcessHolder(instance, cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// runSupervisor runs cfg's supervisor until the test ends and returns it
// once it serves.
func runSupervisor(t *testing.T, cfg node.Config) *node.Supervisor {
	t.Helper()
	sup, err := node.NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- sup.Run(ctx, ready) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("node %s did not stop within 60 s", cfg.NodeID)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("node %s did not start: %v", cfg.NodeID, err)
	case <-time.After(45 * time.Second):
		t.Fatalf("node %s not serving within 45 s", cfg.NodeID)
	}
	return sup
}

// TestLeaseOfDeadHolderTakenOverOnlyWhenProven: the lease holds the record
// of a process that is gone (a child of the test, killed and reaped), or
// that record changed so that it cannot be proven dead. Proven, it is taken
// over at once by compare-and-set: the new term follows the holder's
// revision. Not proven (another boot, another PID namespace, another host,
// a live process, an older node's bare string, or the switch off), the
// supervisor waits for the lease (2 s) to expire.
func TestLeaseOfDeadHolderTakenOverOnlyWhenProven(t *testing.T) {
	e := newEnv(t)
	alive := exec.Command("sleep", "600")
	if err := alive.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alive.Process.Kill(); _ = alive.Wait() })
	aliveRec, err := node.ProcessHolder("n@alive", alive.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name     string
		value    func(dead node.Holder) []byte
		fastOff  bool
		takeover bool
	}{
		{"dead process", func(h node.Holder) []byte { return h.Marshal() }, false, true},
		{"another boot", func(h node.Holder) []byte { h.BootID = "00000000-0000-0000-0000-000000000000"; return h.Marshal() }, false, false},
		{"another PID namespace", func(h node.Holder) []byte { h.PIDNamespace = "pid:[1]"; return h.Marshal() }, false, false},
		{"another host", func(h node.Holder) []byte { h.Host += "-elsewhere"; return h.Marshal() }, false, false},
		{"a live process", func(node.Holder) []byte { return aliveRec.Marshal() }, false, false},
		{"an older node's bare instance", func(h node.Holder) []byte { return []byte(h.Instance) }, false, false},
		{"dead process, fast takeover off", func(h node.Holder) []byte { return h.Marshal() }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("n%d", i)
			const holderTTL = 2 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			held, err := bus.AcquireLease(ctx, e.bs.JetStream(), schema.BucketLeases, schema.LeaseKeyNode(id),
				tc.value(deadRecord(t, id+"@gone")), holderTTL)
			if err != nil {
				t.Fatal(err)
			}
			acquired := time.Now()
			cfg := e.fastConfig(id)
			cfg.FastTakeover = !tc.fastOff
			st := runSupervisor(t, cfg).NodeIDStart()
			sinceHeld := time.Since(acquired)
			if tc.takeover {
				if !st.TakenOver || st.WaitedOut || st.HolderRevision != held.Term() || st.Term <= held.Term() {
					t.Fatalf("node id start %+v, want taken over from revision %d to a later one", st, held.Term())
				}
			} else {
				if st.TakenOver || !st.WaitedOut || st.HolderRevision != held.Term() || st.Term <= held.Term() {
					t.Fatalf("node id start %+v, want the holder at revision %d waited out", st, held.Term())
				}
				// Waited out: the lease cannot have expired before its
				// TTL, counted from its acquisition.
				if sinceHeld < holderTTL {
					t.Fatalf("serving %s after a %s lease was taken: not waited out", sinceHeld, holderTTL)
				}
			}
			t.Logf("node id start %+v; serving %s after the holder's lease was taken", st, sinceHeld.Round(time.Millisecond))
		})
	}
}

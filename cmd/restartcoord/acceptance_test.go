package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// natsCLI finds the stock nats CLI (make tools installs natscli v0.5.0
// into ./bin). CI never lacks it; elsewhere the test skips with a message.
func natsCLI(t *testing.T) string {
	t.Helper()
	for _, p := range []string{filepath.Join("..", "..", "bin", "nats")} {
		if abs, err := filepath.Abs(p); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the nats CLI is missing in CI: .ci/run must run `make tools`")
	}
	t.Skip("nats CLI not found: run `make tools` (installs natscli v0.5.0 into ./bin)")
	return ""
}

// buildBinary builds restartcoord once for the acceptance tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "restartcoord")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type devProc struct {
	cmd *exec.Cmd
	url string
}

var urlRE = regexp.MustCompile(`NATS with JetStream at (nats://[0-9.:]+)`)

// startDev runs `restartcoord dev` and waits for its "ready" banner.
func startDev(t *testing.T, bin, data string, nodes int) *devProc {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--nats-port", "0", "--nodes", strconv.Itoa(nodes), "--data", data)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case url := <-found:
		d := &devProc{cmd: cmd, url: url}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
			}
		})
		return d
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("restartcoord dev not ready in 60s; stderr:\n%s", stderr.String())
	}
	return nil
}

// natsReq runs `nats req SUBJECT BODY` and returns the body it printed.
func natsReq(t *testing.T, cli, url, subject, body string) []byte {
	t.Helper()
	out, err := exec.Command(cli, "--server", url, "req", "--raw", "--timeout", "60s", subject, body).Output()
	if err != nil {
		t.Fatalf("nats req %s %s: %v", subject, body, err)
	}
	return bytes.TrimSpace(out)
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return v
}

func TestAcceptanceWithNatsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("acceptance test builds the binary and runs processes")
	}
	cli := natsCLI(t)
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "dev")
	dev := startDev(t, bin, data, 2)
	subj := func(op string) string { return schema.NodeSubject("node-1", op) }

	h := decode[schema.Health](t, natsReq(t, cli, dev.url, subj(schema.OpHealth), "{}"))
	if h.Type != schema.TypeHealth || !h.Healthy || h.NodeID != "node-1" || h.WorkerPID == 0 || h.Checks.Database == nil {
		t.Fatalf("health: %+v", h)
	}
	pr := decode[schema.ShutdownReadiness](t, natsReq(t, cli, dev.url, subj(schema.OpPrepare), "{}"))
	if pr.Type != schema.TypeShutdownReadiness || !pr.ReadyForShutdown || pr.Checks.Database == nil {
		t.Fatalf("shutdown.prepare: %+v", pr)
	}
	rt := decode[schema.ReconnectTest](t, natsReq(t, cli, dev.url, subj(schema.OpReconnectTest), "{}"))
	if rt.Type != schema.TypeReconnectTest || !rt.TestCompleted || rt.OverallStatus != schema.StatusPass {
		t.Fatalf("reconnect.test: %+v", rt)
	}

	// A task through the restartcoord CLI, so the restarts have state to keep.
	out, err := exec.Command(bin, "task", "create", "node-1", "--title", "acceptance", "--json", "-s", dev.url).Output()
	if err != nil {
		t.Fatalf("restartcoord task create: %v", err)
	}
	task := decode[schema.Task](t, out)
	out, err = exec.Command(bin, "clients", "node-1", "--json", "-s", dev.url).Output()
	if err != nil {
		t.Fatalf("restartcoord clients: %v", err)
	}
	if cl := decode[schema.ClientList](t, out); len(cl.Clients) != 1 || cl.Clients[0].Requests != 1 || cl.BufferLimit != 100 {
		t.Fatalf("clients: %s", out)
	}

	g := decode[schema.RestartResult](t, natsReq(t, cli, dev.url, subj(schema.OpRestart), `{"reason":"manual_request"}`))
	if !g.Success || !g.Graceful || g.NewPID == g.OldPID || g.State.TasksRestored != 1 || !g.State.SnapshotWritten {
		t.Fatalf("graceful restart: %+v", g)
	}
	em := decode[schema.RestartResult](t, natsReq(t, cli, dev.url, subj(schema.OpRestart), `{"graceful":false}`))
	if !em.Success || em.Graceful || em.NewPID == g.NewPID || em.State.TasksRestored != 1 {
		t.Fatalf("emergency restart: %+v", em)
	}
	st := decode[schema.RestartStatus](t, natsReq(t, cli, dev.url, subj(schema.OpRestartStatus), `{"include_history":true}`))
	if st.History == nil || st.History.TotalRestarts != 2 || st.CurrentStatus.Phase != schema.PhaseIdle {
		t.Fatalf("restart.status: %+v", st)
	}
	bad := natsReq(t, cli, dev.url, subj(schema.OpRestart), `{"timeout":5}`)
	if e, ok := schema.ParseEnvelope(bad); !ok || e.Code != schema.CodeInvalidParameters || e.Field() != "timeout" {
		t.Fatalf("bad restart: %s", bad)
	}

	// nats micro ls: one orch-node instance per node.
	ls, err := exec.Command(cli, "--server", dev.url, "micro", "ls", "--json").Output()
	if err != nil {
		t.Fatalf("nats micro ls: %v", err)
	}
	if n := strings.Count(string(ls), `"name": "orch-node"`) + strings.Count(string(ls), `"name":"orch-node"`); n != 2 {
		t.Fatalf("nats micro ls shows %d orch-node instances, want 2:\n%s", n, ls)
	}

	// restartcoord verbs and their exit codes.
	if code := exitOf(exec.Command(bin, "health", "node-1", "-s", dev.url)); code != 0 {
		t.Fatalf("restartcoord health exit %d", code)
	}
	if code := exitOf(exec.Command(bin, "restart", "node-1", "--timeout-secs", "5", "-s", dev.url)); code != 2 {
		t.Fatalf("restartcoord restart --timeout-secs 5: exit %d, want 2", code)
	}
	if code := exitOf(exec.Command(bin, "health", "node-9", "-s", dev.url)); code != 3 {
		t.Fatalf("restartcoord health of an unknown node: exit %d, want 3", code)
	}

	// SIGKILL of the whole dev process: its workers die with it.
	workers := childPIDs(t, dev.cmd.Process.Pid)
	if len(workers) != 2 {
		t.Fatalf("dev has %d worker processes, want 2", len(workers))
	}
	_ = dev.cmd.Process.Signal(syscall.SIGKILL)
	_ = dev.cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range workers {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d outlived its supervisor", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The same data directory brings back the state and the history
	// (node ids are free again once the dead supervisors' leases expire).
	dev2 := startDev(t, bin, data, 2)
	got := natsReq(t, cli, dev2.url, subj(schema.OpRestartStatus), `{"include_history":true}`)
	if st := decode[schema.RestartStatus](t, got); st.History.TotalRestarts != 2 {
		t.Fatalf("history after a dev restart: %s", got)
	}
	out, err = exec.Command(bin, "task", "get", "node-1", task.TaskID, "--json", "-s", dev2.url).Output()
	if err != nil {
		t.Fatalf("task get after dev restart: %v", err)
	}
	if back := decode[schema.Task](t, out); !back.Equal(&task) {
		t.Fatalf("task after dev restart:\n got  %s\n want %+v", out, task)
	}
	// Ctrl-C stops it cleanly, leaving no process behind.
	workers = childPIDs(t, dev2.cmd.Process.Pid)
	_ = dev2.cmd.Process.Signal(syscall.SIGINT)
	if err := dev2.cmd.Wait(); err != nil {
		t.Fatalf("dev after Ctrl-C: %v", err)
	}
	for _, pid := range workers {
		if syscall.Kill(pid, 0) == nil {
			t.Fatalf("worker %d left behind after Ctrl-C", pid)
		}
	}
}

func exitOf(cmd *exec.Cmd) int {
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return -1
	}
	return 0
}

// childPIDs lists the direct children of pid (from /proc).
func childPIDs(t *testing.T, pid int) []int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		// Children may hang off other threads of the process.
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		var all []byte
		for _, e := range entries {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name()))
			all = append(all, b...)
			all = append(all, ' ')
		}
		data = all
	} else {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range entries {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name()))
			data = append(append(data, ' '), b...)
		}
	}
	seen := map[int]bool{}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

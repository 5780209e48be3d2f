package node

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// startSleep starts a child process that lives until killed; the test
// reaps it in the end whatever happened.
func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func recordOf(t *testing.T, pid int) Holder {
	t.Helper()
	h, err := ProcessHolder("n1@test/"+time.Now().Format("150405.000"), pid)
	if err != nil {
		t.Fatalf("ProcessHolder(%d): %v", pid, err)
	}
	if h.Host == "" || h.BootID == "" || !strings.HasPrefix(h.PIDNamespace, "pid:[") || h.PID != pid || h.StartTicks == 0 {
		t.Fatalf("ProcessHolder(%d) = %+v: a fact is missing", pid, h)
	}
	return h
}

func wantDead(t *testing.T, h Holder, want bool, because string) {
	t.Helper()
	dead, why := h.ProvenDead()
	if dead != want || !strings.Contains(why, because) {
		t.Fatalf("ProvenDead(%+v) = %v (%s), want %v because %q", h, dead, why, want, because)
	}
}

// TestHolderProvenDead: a record proves its process dead only when the
// process is gone, reused its PID, or is a zombie, on this host, in this
// boot and PID namespace; this process and a live child are never dead.
func TestHolderProvenDead(t *testing.T) {
	t.Run("this process", func(t *testing.T) {
		wantDead(t, recordOf(t, os.Getpid()), false, "this very process")
	})

	t.Run("a live child, then a zombie, then reaped", func(t *testing.T) {
		cmd := startSleep(t)
		h := recordOf(t, cmd.Process.Pid)
		wantDead(t, h, false, "alive")
		reused := h
		reused.StartTicks++
		wantDead(t, reused, true, "PID was reused")

		// Killed and not waited for: a zombie until its parent reaps it.
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := readProcStat(h.PID)
			if err != nil {
				t.Fatalf("reading the killed child before reaping it: %v", err)
			}
			if st.state == 'Z' {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("killed child in state %c after 10 s, want Z", st.state)
			}
			time.Sleep(10 * time.Millisecond)
		}
		wantDead(t, h, true, "has exited")

		_ = cmd.Wait()
		wantDead(t, h, true, "no longer exists")
	})

	// A record of a process that is gone for certain, then changed one
	// fact at a time: each change makes it unprovable.
	cmd := startSleep(t)
	gone := recordOf(t, cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	wantDead(t, gone, true, "no longer exists")
	for _, tc := range []struct {
		name    string
		change  func(h *Holder)
		because string
	}{
		{"another host", func(h *Holder) { h.Host += "-other" }, "host"},
		{"another boot", func(h *Holder) { h.BootID = "00000000-0000-0000-0000-000000000000" }, "boot"},
		{"another PID namespace", func(h *Holder) { h.PIDNamespace = "pid:[1]" }, "PID namespace"},
		{"no boot id", func(h *Holder) { h.BootID = "" }, "incomplete"},
		{"no start time", func(h *Holder) { h.StartTicks = 0 }, "incomplete"},
		{"no pid", func(h *Holder) { h.PID = 0 }, "incomplete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := gone
			tc.change(&h)
			wantDead(t, h, false, tc.because)
		})
	}
}

// TestParseHolder: the record round-trips; the bare instance string older
// supervisors wrote, and anything else, is no record (so not provable) but
// still names its instance for the worker's check.
func TestParseHolder(t *testing.T) {
	rec := Holder{Instance: "n1@h/7/abcd1234", Host: "h", BootID: "b", PIDNamespace: "pid:[1]", PID: 7, StartTicks: 99}
	for _, tc := range []struct {
		name     string
		value    string
		ok       bool
		instance string
	}{
		{"record", string(rec.Marshal()), true, rec.Instance},
		{"older bare instance", "n1@h/7/abcd1234", false, "n1@h/7/abcd1234"},
		{"json without instance", `{"host":"h","pid":7}`, false, `{"host":"h","pid":7}`},
		{"garbage", "{", false, "{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := ParseHolder([]byte(tc.value))
			if ok != tc.ok || (ok && h != rec) {
				t.Errorf("ParseHolder(%q) = %+v, %v; want ok %v", tc.value, h, ok, tc.ok)
			}
			if got := holderInstance(tc.value); got != tc.instance {
				t.Errorf("holderInstance(%q) = %q, want %q", tc.value, got, tc.instance)
			}
		})
	}
}

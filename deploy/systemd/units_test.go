package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var units = []string{"restartcoord-nats.service", "restartcoord-coordinator.service", "restartcoord-node@.service"}

// TestUnitsVerify runs systemd-analyze verify on every unit (the binary's
// path replaced by this test's own executable, which exists here).
func TestUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: units not verified")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		name := u
		if strings.HasSuffix(u, "@.service") {
			name = strings.Replace(u, "@.service", "@node-1.service", 1) // an instance of the template
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/restartcoord", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
	// verify warns about the User= that does not exist here; anything
	// about the units' own syntax is an error.
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.Contains(line, "User") && !strings.Contains(line, "Group") {
			t.Errorf("systemd-analyze: %s", line)
		}
	}
	if err != nil && t.Failed() {
		t.Fatalf("systemd-analyze verify: %v", err)
	}
}

// TestSupervisorOwnsWorkerRestarts checks what the design requires of the
// node unit: systemd restarts only the supervisor, SIGTERM reaches only the
// supervisor (which drains and stops its worker), with time to drain.
func TestSupervisorOwnsWorkerRestarts(t *testing.T) {
	b, err := os.ReadFile("restartcoord-node@.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"KillMode=mixed", "KillSignal=SIGTERM", "Restart=on-failure", "TimeoutStopSec=45", "--id %i"} {
		if !strings.Contains(unit, "\n"+want) && !strings.Contains(unit, want) {
			t.Errorf("node unit lacks %q", want)
		}
	}
	if strings.Contains(unit, "KillMode=control-group") || strings.Contains(unit, "KillMode=process") {
		t.Error("node unit must use KillMode=mixed")
	}
}

package hangtest

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The binary runs itself with TestHangingChild selected: that test hangs
// under a 200 ms guard, which must end the process naming it.
func TestGuardEndsAHungTestNamingIt(t *testing.T) {
	if os.Getenv("HANGTEST_CHILD") != "" {
		t.Skip("the child runs TestHangingChild only")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHangingChild$", "-test.timeout", "1m")
	cmd.Env = append(os.Environ(), "HANGTEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("child: %v, want exit status 2\n%s", err, out)
	}
	for _, want := range []string{"panic: TestHangingChild still running after 200ms", "hangtest.TestHangingChild", "panic: TestHangingChild hung"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestHangingChild(t *testing.T) {
	if os.Getenv("HANGTEST_CHILD") == "" {
		t.Skip("run by TestGuardEndsAHungTestNamingIt")
	}
	Guard(t, 200*time.Millisecond)
	select {} // hangs
}

func TestGuardStopsWithTheTest(t *testing.T) {
	t.Run("quick", func(t *testing.T) { Guard(t, 50*time.Millisecond) })
	time.Sleep(150 * time.Millisecond) // the process is still here
}

//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaos runs a seeded schedule of faults against a process-mode cluster
// (3 NATS servers, 2 coordinators, 5 nodes, all real processes of the
// binary) under client load and rolls. SEED and DURATION choose the run:
//
//	SEED=7 DURATION=10m make chaos
func TestChaos(t *testing.T) {
	seed := uint64(time.Now().UnixNano() % 100000)
	if s := os.Getenv("SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEED=%q: want a non-negative integer", s)
		}
		seed = v
	}
	dur := 2 * time.Minute
	if s := os.Getenv("DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("DURATION=%q: want a positive duration such as 3m", s)
		}
		dur = d
	}
	var kinds []string
	if s := os.Getenv("FAULTS"); s != "" {
		for k := range strings.SplitSeq(s, ",") {
			if !slices.Contains(Faults, k) {
				t.Fatalf("FAULTS=%q: %q is not one of %s", s, k, strings.Join(Faults, ", "))
			}
			kinds = append(kinds, k)
		}
	}
	repro := fmt.Sprintf("SEED=%d DURATION=%s make chaos", seed, dur)
	if kinds != nil {
		repro = "FAULTS=" + strings.Join(kinds, ",") + " " + repro
	}
	t.Logf("seed %d, duration %s (reproduce: %s)", seed, dur, repro)
	dir := t.TempDir()
	if d := os.Getenv("CHAOS_DIR"); d != "" {
		dir = d // kept after the run, for its logs
	}
	bin := filepath.Join(dir, "restartcoord")
	build := exec.Command("go", "build", "-o", bin, "../cmd/restartcoord")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx := context.Background()
	c, err := StartCluster(ctx, Config{Binary: bin, Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	rep, err := Run(ctx, c, RunConfig{Seed: seed, Duration: dur, Kinds: kinds, Logf: t.Logf})
	if err != nil {
		dumpLogs(t, c)
		t.Fatalf("seed %d: %v (reproduce: %s)", seed, err, repro)
	}
	rep.Write(os.Stdout)
	if rep.Failed() {
		dumpLogs(t, c)
		t.Fatalf("invariants failed: reproduce with %s", repro)
	}
}

// dumpLogs prints the tail of every process's log.
func dumpLogs(t *testing.T, c *Cluster) {
	for _, f := range c.Logs() {
		b, _ := os.ReadFile(f)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		name, err := filepath.Rel(filepath.Join(c.cfg.Dir, "logs"), f)
		if err != nil {
			name = f
		}
		t.Logf("==> %s <==\n%s", name, b)
	}
}

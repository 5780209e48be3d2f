//go:build integration

package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

var (
	// repoRoot is the module's root (the tests run in ./integration).
	repoRoot string
	// rcBin is the host-side restartcoord binary TestMain built (the one the
	// image holds too).
	rcBin string
	// natsBin is the stock nats CLI (`make tools`), "" when it is missing.
	natsBin string
	// noDocker says why there is no usable Docker engine (nil: there is one).
	noDocker error
	// dockerHost is the engine testcontainers found (unix:///var/run/docker.sock).
	dockerHost string
	// imageBuilt says TestMain built Image from this checkout.
	imageBuilt bool
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	flag.Parse()
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		// The reaper is an image pulled from a registry: there is none here.
		// Every test's cleanup removes its containers and network itself.
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	if testing.Short() {
		return m.Run() // every test skips under -short
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if dockerHost, noDocker = dockerHealth(ctx); noDocker != nil {
		return m.Run() // every test skips, saying why
	}
	var err error
	if repoRoot, err = filepath.Abs(".."); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "restartcoord-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if err := buildImage(ctx, filepath.Join(tmp, "image")); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	if err := resolveHost(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	natsBin = findNatsCLI()
	return m.Run()
}

// resolveHost makes sure the host testcontainers hands out for published
// ports reaches them. Inside a container (/.dockerenv) testcontainers takes
// the default gateway; that is wrong when the Docker engine runs in this
// same container, where the ports are on the loopback: a throwaway NATS
// server tells which works, and $TESTCONTAINERS_HOST_OVERRIDE is set to it.
func resolveHost(ctx context.Context) error {
	if _, set := os.LookupEnv("TESTCONTAINERS_HOST_OVERRIDE"); set {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	probe, err := testcontainers.Run(ctx, Image,
		testcontainers.WithLogger(tclog.NewNoopLogger()),
		testcontainers.WithCmd("nats", "--config", "/etc/restartcoord/nats/single.conf"),
		testcontainers.WithEnv(map[string]string{"NATS_NAME": "probe"}),
		testcontainers.WithExposedPorts(natsClientPort),
		testcontainers.WithWaitStrategy(wait.ForLog("Server is ready").WithStartupTimeout(60*time.Second)))
	defer func() { _ = testcontainers.TerminateContainer(probe, testcontainers.StopTimeout(0)) }()
	if err != nil {
		return fmt.Errorf("probe container: %w", err)
	}
	host, err := probe.Host(ctx)
	if err != nil {
		return err
	}
	port, err := probe.MappedPort(ctx, natsClientPort)
	if err != nil {
		return err
	}
	var tried []string
	for _, h := range []string{host, "127.0.0.1"} {
		err := natsAnswers(ctx, net.JoinHostPort(h, port.Port()))
		if err == nil {
			if h != host {
				os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", h)
				fmt.Fprintf(os.Stderr, "integration: published ports are not reachable on %s (testcontainers' choice) but are on %s: TESTCONTAINERS_HOST_OVERRIDE=%s\n", host, h, h)
			}
			return nil
		}
		tried = append(tried, err.Error())
	}
	return fmt.Errorf("a container's published port is reachable on none of the hosts tried (set TESTCONTAINERS_HOST_OVERRIDE): %s", strings.Join(tried, "; "))
}

// natsAnswers dials addr and expects a NATS server's INFO line.
func natsAnswers(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "INFO" {
		return fmt.Errorf("%s: no NATS INFO line (%q, %v)", addr, buf, err)
	}
	return nil
}

// dockerHealth checks that a Docker engine answers, as testcontainers finds
// it (DOCKER_HOST, ~/.testcontainers.properties, the usual sockets).
func dockerHealth(ctx context.Context) (host string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers panicked looking for it: %v", r)
		}
	}()
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", err
	}
	defer p.Close()
	if err := p.Health(hctx); err != nil {
		return "", err
	}
	return p.Client().DaemonHost(), nil
}

// requireDocker skips the test when there is no Docker engine (or -short).
func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: skipped with -short (it runs a 10-container cluster in Docker)")
	}
	if noDocker != nil {
		t.Skipf("integration: no Docker engine: %v", noDocker)
	}
}

// buildImage builds the static binary (as `make image` does: CGO_ENABLED=0,
// -trimpath, the same version) and the image from deploy/Dockerfile, in a
// private build context so that deploy/.build is left alone. When nothing
// changed since `make image`, the binary is byte for byte the same and
// docker build only hits its cache. $RESTARTCOORD_IMAGE names an image to use
// as it is, built by someone else.
func buildImage(ctx context.Context, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, ".build"), 0o755); err != nil {
		return err
	}
	rcBin = filepath.Join(dir, ".build", "restartcoord")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-X main.version=0.1.0-"+makeVersion(),
		"-o", rcBin, "./cmd/restartcoord")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/restartcoord: %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "integration: built %s in %s\n", rcBin, time.Since(start).Round(time.Millisecond))

	if img := os.Getenv("RESTARTCOORD_IMAGE"); img != "" {
		Image = img
		fmt.Fprintf(os.Stderr, "integration: using image %s ($RESTARTCOORD_IMAGE) as it is\n", img)
		return nil
	}
	deploy := filepath.Join(repoRoot, "deploy")
	df, err := os.ReadFile(filepath.Join(deploy, "Dockerfile"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		return err
	}
	if err := os.CopyFS(filepath.Join(dir, "nats"), os.DirFS(filepath.Join(deploy, "nats"))); err != nil {
		return fmt.Errorf("copying deploy/nats: %w", err)
	}
	start = time.Now()
	if _, err := exec.LookPath("docker"); err == nil {
		cmd := exec.CommandContext(ctx, "docker", "build", "-q", "-t", Image, "-f", "Dockerfile", ".")
		cmd.Dir = dir
		// The engine testcontainers runs the containers on.
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("docker build -t %s: %v\n%s", Image, err, out)
		}
		fmt.Fprintf(os.Stderr, "integration: built image %s (%s) in %s\n", Image, lastLine(out), time.Since(start).Round(time.Millisecond))
		imageBuilt = true
		return nil
	}
	// No docker CLI: the engine's API through testcontainers.
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	repo, tag, _ := strings.Cut(Image, ":")
	if tag == "" {
		tag = "latest"
	}
	req := &testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
		Context: dir, Dockerfile: "Dockerfile", Repo: repo, Tag: tag, KeepImage: true}}
	if _, err := p.BuildImage(ctx, req); err != nil {
		return fmt.Errorf("building %s: %w", Image, err)
	}
	fmt.Fprintf(os.Stderr, "integration: built image %s in %s\n", Image, time.Since(start).Round(time.Millisecond))
	imageBuilt = true
	return nil
}

// makeVersion is the Makefile's VERSION: git describe, else "dev".
func makeVersion() string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = repoRoot
	// Read-only: no index refresh written by git describe.
	cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
	out, err := cmd.Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return "dev"
	}
	return strings.ReplaceAll(strings.TrimSpace(string(out)), "/", "-")
}

// findNatsCLI finds the stock nats CLI: ./bin/nats (`make tools`), else $PATH.
func findNatsCLI() string {
	p := filepath.Join(repoRoot, "bin", "nats")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	return ""
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// errExit is the exit code of a command's error (-1: it did not run).
func errExit(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

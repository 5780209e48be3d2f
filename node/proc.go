package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one worker process.
type proc struct {
	cmd     *exec.Cmd
	ipc     *ipcConn
	pid     int
	started time.Time
	ready   chan readyInfo // receives once, when the worker serves
	exited  chan struct{}  // closed when the process has exited
	exitErr error
	tail    *lineTail

	mu       sync.Mutex
	expected bool // the supervisor asked it to go (no crash handling)
	why      string
	frozen   bool // killed by the watchdog
}

func (p *proc) expect(why string) {
	p.mu.Lock()
	p.expected, p.why = true, why
	p.mu.Unlock()
}

func (p *proc) wasExpected() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.expected }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL (a stopped process dies too).
func (p *proc) kill() { _ = p.cmd.Process.Signal(syscall.SIGKILL) }

// spawn starts a worker with env, wiring its channel, its log and events.
func (s *Supervisor) spawn(env workerEnv) (*proc, error) {
	exe := s.cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	envJSON, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	mine, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	if err := os.MkdirAll(s.cfg.LogDir, 0o755); err != nil {
		mine.Close()
		return nil, err
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		mine.Close()
		return nil, err
	}
	tail := newLineTail(40)
	out := io.MultiWriter(logf, tail)
	cmd := exec.Command(exe, s.cfg.Args...)
	cmd.Env = append(os.Environ(), EnvWorker+"="+string(envJSON))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL, // the worker dies with its supervisor
		Setpgid:   true,            // and a terminal's Ctrl-C reaches only the supervisor
	}
	if err := startLocked(cmd); err != nil {
		mine.Close()
		logf.Close()
		return nil, fmt.Errorf("node: start worker: %w", err)
	}
	p := &proc{cmd: cmd, ipc: mine, pid: cmd.Process.Pid, started: time.Now(), ready: make(chan readyInfo, 1),
		exited: make(chan struct{}), tail: tail}
	go func() {
		p.exitErr = cmd.Wait()
		logf.Close()
		mine.Close()
		close(p.exited)
	}()
	go func() {
		_ = mine.Serve(context.Background(), nil, func(op string, data json.RawMessage) {
			switch op {
			case evPhase:
				var m phaseMsg
				if json.Unmarshal(data, &m) == nil {
					s.workerPhase(p, m)
				}
			case evReady:
				var r readyInfo
				if json.Unmarshal(data, &r) == nil {
					select {
					case p.ready <- r:
					default:
					}
				}
			case evAlert:
				s.workerAlert(data)
			case evSnapshot:
				var ev snapshotEvent
				if json.Unmarshal(data, &ev) == nil {
					s.snapshotTaken(ev)
				}
			}
		})
	}()
	return p, nil
}

// startLocked starts cmd from a goroutine locked to its OS thread for the
// life of the child: Pdeathsig fires when the thread that forked exits, and
// the Go runtime may retire an unlocked thread.
var forkThread struct {
	once sync.Once
	reqs chan func()
}

func startLocked(cmd *exec.Cmd) error {
	forkThread.once.Do(func() {
		forkThread.reqs = make(chan func())
		go func() {
			lockOSThread()
			for f := range forkThread.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	forkThread.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// waitReady waits for the worker to serve, to exit, or for the timeout.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) (readyInfo, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-p.ready:
		return r, nil
	case <-p.exited:
		select {
		case r := <-p.ready:
			return r, nil
		default:
		}
		return readyInfo{}, fmt.Errorf("worker %d exited before it was ready (%v)", p.pid, p.exitErr)
	case <-t.C:
		return readyInfo{}, fmt.Errorf("worker %d not ready within %s", p.pid, timeout)
	case <-ctx.Done():
		return readyInfo{}, ctx.Err()
	}
}

// waitExit waits for the process to exit, up to timeout.
func (p *proc) waitExit(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		return errors.New("worker did not exit in time")
	}
}

// lineTail keeps the last n lines written to it.
type lineTail struct {
	mu    sync.Mutex
	n     int
	lines []string
	part  string
}

func newLineTail(n int) *lineTail { return &lineTail{n: n} }

func (t *lineTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(b)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.lines = append(t.lines, parts[:len(parts)-1]...)
	if over := len(t.lines) - t.n; over > 0 {
		t.lines = t.lines[over:]
	}
	return len(b), nil
}

// Last returns up to k of the last lines.
func (t *lineTail) Last(k int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if t.part != "" {
		lines = append(append([]string{}, lines...), t.part)
	}
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return append([]string{}, lines...)
}

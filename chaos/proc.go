package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process of the cluster under test (a NATS server, a
// coordinator or a node's supervisor), started from the real binary and
// restarted by the harness the way systemd or Docker would.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string // file the process's stderr and stdout go to

	// restartAfter > 0 restarts the process that far after it exits on its
	// own, as systemd's Restart=on-failure or Docker's restart policy would;
	// onExit hears of each such exit.
	restartAfter time.Duration
	onExit       func(name string, err error)

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current process has exited
	wanted bool          // the harness wants it running (not killed or stopped by it)
}

func newProc(name, bin, logDir string, env []string, args ...string) *proc {
	return &proc{name: name, bin: bin, args: args, env: env, log: filepath.Join(logDir, name+".log")}
}

// start starts the process; its output is appended to its log file.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isDone(p.done) {
		return fmt.Errorf("chaos: %s already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("chaos: %s log: %w", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so the harness's signals reach only what it
	// targets, never the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("chaos: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		f.Close()
		close(done)
		p.exited(cmd, err)
	}()
	p.cmd, p.done, p.wanted = cmd, done, true
	return nil
}

// exited restarts a process that ended on its own, if asked to.
func (p *proc) exited(cmd *exec.Cmd, err error) {
	p.mu.Lock()
	again := p.wanted && p.cmd == cmd && p.restartAfter > 0
	p.mu.Unlock()
	if !again {
		return
	}
	if p.onExit != nil {
		p.onExit(p.name, err)
	}
	time.Sleep(p.restartAfter)
	p.mu.Lock()
	again = p.wanted && p.cmd == cmd
	p.mu.Unlock()
	if again {
		_ = p.start()
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// pid is the running process's id, 0 when it is not running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isDone(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *proc) kill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.wanted = false
	p.mu.Unlock()
	if cmd == nil || isDone(done) {
		return nil
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT) // a stopped process dies as well, but be explicit
	if err := cmd.Process.Kill(); err != nil && !isDone(done) {
		return fmt.Errorf("chaos: kill %s: %w", p.name, err)
	}
	<-done
	return nil
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.wanted = false
	p.mu.Unlock()
	if cmd == nil || isDone(done) {
		return
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// children lists the processes whose parent is pid, from /proc.
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid(c) == pid {
			out = append(out, c)
		}
	}
	return out
}

// ppid reads a process's parent from /proc/<pid>/stat (0 if it is gone).
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

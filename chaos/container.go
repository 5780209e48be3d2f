package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// ContainerFaults lists the fault kinds on a Docker container.
var ContainerFaults = []string{"kill-worker", "kill", "stop", "partition"}

// ContainerFault is a fault on one container of a container-mode cluster,
// made with the docker CLI: kill-worker (SIGKILL of the node's worker
// process, found with `docker top`), kill (`docker kill`, healed by
// `docker start`, as a restart policy would), stop (`docker pause`, the
// cgroup freezer, healed by `docker unpause`) and partition
// (`docker network disconnect`, healed by connecting it again with its
// aliases).
type ContainerFault struct {
	kind, container, network string
	aliases                  []string
}

// NewContainerFault makes a fault of kind on container; network and aliases
// are needed by partition, to connect the container back as it was.
func NewContainerFault(kind, container, network string, aliases ...string) (*ContainerFault, error) {
	switch kind {
	case "kill-worker", "kill", "stop":
	case "partition":
		if network == "" {
			return nil, fmt.Errorf("chaos: partition of %s needs its network", container)
		}
	default:
		return nil, fmt.Errorf("chaos: unknown container fault %q (want one of %v)", kind, ContainerFaults)
	}
	return &ContainerFault{kind: kind, container: container, network: network, aliases: aliases}, nil
}

func (f *ContainerFault) Kind() string   { return f.kind }
func (f *ContainerFault) Target() string { return f.container }

func (f *ContainerFault) Inject(ctx context.Context) error {
	switch f.kind {
	case "kill-worker":
		pid, err := WorkerPIDInContainer(ctx, f.container)
		if err != nil {
			return err
		}
		return syscall.Kill(pid, syscall.SIGKILL)
	case "kill":
		return docker(ctx, "kill", f.container)
	case "stop":
		return docker(ctx, "pause", f.container)
	case "partition":
		return docker(ctx, "network", "disconnect", f.network, f.container)
	}
	return nil
}

func (f *ContainerFault) Heal(ctx context.Context) error {
	switch f.kind {
	case "kill":
		return docker(ctx, "start", f.container)
	case "stop":
		return docker(ctx, "unpause", f.container)
	case "partition":
		args := []string{"network", "connect"}
		for _, a := range f.aliases {
			args = append(args, "--alias", a)
		}
		return docker(ctx, append(args, f.network, f.container)...)
	}
	return nil // kill-worker: the supervisor restarts it
}

// WorkerPIDInContainer finds a node container's worker: the process whose
// parent is the container's main process (the supervisor). The pids are the
// host's, as `docker top` gives them.
func WorkerPIDInContainer(ctx context.Context, container string) (int, error) {
	out, err := exec.CommandContext(ctx, "docker", "top", container, "-o", "pid,ppid").Output()
	if err != nil {
		return 0, fmt.Errorf("chaos: docker top %s: %w", container, err)
	}
	type row struct{ pid, ppid int }
	var rows []row
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		pid, e1 := strconv.Atoi(f[0])
		ppid, e2 := strconv.Atoi(f[1])
		if e1 == nil && e2 == nil {
			rows = append(rows, row{pid, ppid})
		}
	}
	pids := map[int]bool{}
	for _, r := range rows {
		pids[r.pid] = true
	}
	for _, r := range rows {
		if pids[r.ppid] { // a child of another process of the container
			return r.pid, nil
		}
	}
	return 0, fmt.Errorf("chaos: no worker process in %s (%d processes)", container, len(rows))
}

func docker(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chaos: docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

var _ Fault = (*ContainerFault)(nil)

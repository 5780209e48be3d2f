package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/restartcoord/restartcoord/schema"
)

// The supervisor and its worker exchange newline-delimited JSON frames over
// a Unix socket pair. A frame with an id and an op is a call; a frame with
// reply set answers the call of that id; a frame with id 0 is an event.
type frame struct {
	ID    uint64          `json:"id,omitempty"`
	Op    string          `json:"op,omitempty"`
	Reply bool            `json:"reply,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Err   string          `json:"err,omitempty"`
	Code  string          `json:"code,omitempty"`
}

// ipc operations (supervisor to worker).
const (
	ipcPing     = "ping"
	ipcStats    = "stats"
	ipcDrain    = "drain"    // maintenance, suspend, snapshot, notify; then exit
	ipcResume   = "resume"   // undo a drain that failed
	ipcSnapshot = "snapshot" // take one now
	ipcDiff     = "diff"     // what restoring a snapshot would discard
	ipcReply    = "reply"    // a kept reply by request id
)

// ipc events (worker to supervisor).
const (
	evPhase    = "phase"
	evReady    = "ready"
	evAlert    = "alert"
	evSnapshot = "snapshot" // one was written: its size, for state_size
)

// ErrIPCClosed is returned by calls on a closed channel.
var ErrIPCClosed = errors.New("node: worker channel closed")

// ipcHandler answers a call; a returned error travels as err (and code).
type ipcHandler func(ctx context.Context, op string, data json.RawMessage) (any, error)

type ipcConn struct {
	conn    net.Conn
	wmu     sync.Mutex
	w       *bufio.Writer
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan frame
	closed  chan struct{}
	once    sync.Once
}

// socketPair returns two connected ends: one for this process, one (a file)
// to hand to the child as an extra file descriptor.
func socketPair() (*ipcConn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("node: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "ipc-supervisor")
	theirs := os.NewFile(uintptr(fds[1]), "ipc-worker")
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return newIPC(c), theirs, nil
}

// ipcFromFD opens the worker's end, inherited as file descriptor fd.
func ipcFromFD(fd uintptr) (*ipcConn, error) {
	f := os.NewFile(fd, "ipc")
	if f == nil {
		return nil, errors.New("node: no ipc file descriptor")
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("node: ipc fd %d: %w", fd, err)
	}
	return newIPC(c), nil
}

func newIPC(c net.Conn) *ipcConn {
	return &ipcConn{conn: c, w: bufio.NewWriter(c), pending: map[uint64]chan frame{}, closed: make(chan struct{})}
}

func (c *ipcConn) send(f frame) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.w.Write(append(data, '\n')); err != nil {
		return err
	}
	return c.w.Flush()
}

// Event sends an event (no answer).
func (c *ipcConn) Event(op string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.send(frame{Op: op, Data: data})
}

// Call sends a call and waits for its answer, decoded into out.
func (c *ipcConn) Call(ctx context.Context, op string, in, out any) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ch := make(chan frame, 1)
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := c.send(frame{ID: id, Op: op, Data: data}); err != nil {
		return fmt.Errorf("%w: %v", ErrIPCClosed, err)
	}
	select {
	case f := <-ch:
		if f.Err != "" {
			if f.Code != "" {
				return &schema.Error{Code: schema.Code(f.Code), Message: f.Err}
			}
			return errors.New(f.Err)
		}
		if out != nil && len(f.Data) > 0 {
			return json.Unmarshal(f.Data, out)
		}
		return nil
	case <-c.closed:
		return ErrIPCClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func asSchemaErr(err error) *schema.Error {
	var e *schema.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Serve reads frames until the channel closes: answers are routed to their
// callers, calls to handle (each on its own goroutine), events to onEvent.
func (c *ipcConn) Serve(ctx context.Context, handle ipcHandler, onEvent func(op string, data json.RawMessage)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	sc := bufio.NewScanner(c.conn)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var f frame
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			continue
		}
		switch {
		case f.Reply:
			c.mu.Lock()
			ch := c.pending[f.ID]
			c.mu.Unlock()
			if ch != nil {
				ch <- f
			}
		case f.ID != 0 && handle != nil:
			wg.Add(1)
			go func(f frame) {
				defer wg.Done()
				v, err := handle(ctx, f.Op, f.Data)
				out := frame{ID: f.ID, Reply: true}
				if err != nil {
					out.Err = err.Error()
					if se := asSchemaErr(err); se != nil {
						out.Code = string(se.Code)
					}
				} else if v != nil {
					out.Data, _ = json.Marshal(v)
				}
				_ = c.send(out)
			}(f)
		case onEvent != nil:
			onEvent(f.Op, f.Data)
		}
	}
	return sc.Err()
}

// Close closes the channel; pending and future calls fail with ErrIPCClosed.
func (c *ipcConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.conn.Close()
	})
	return err
}

// Done is closed when the channel is closed.
func (c *ipcConn) Done() <-chan struct{} { return c.closed }

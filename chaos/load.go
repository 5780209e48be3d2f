package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// Record is the harness's own record of what clients were told: the ground
// truth every invariant is checked against.
type Record struct {
	mu sync.Mutex
	// calls[client] are the request ids in the order the client made them;
	// acked marks those answered with success.
	calls map[string][]string
	acked map[string]bool
	// node each client talks to.
	clientNode map[string]string
	// tasks is the last acknowledged content of each (plain) task, by node.
	tasks map[string]map[string]schema.Task
	// jobs are the job tasks created, by node.
	jobs map[string][]string
	// errs counts client-visible errors by code (or "transport").
	errs    map[string]int
	errList []string
}

func newRecord() *Record {
	return &Record{calls: map[string][]string{}, acked: map[string]bool{}, clientNode: map[string]string{},
		tasks: map[string]map[string]schema.Task{}, jobs: map[string][]string{}, errs: map[string]int{}}
}

func (r *Record) call(clientID, reqID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[clientID] = append(r.calls[clientID], reqID)
}

func (r *Record) ack(nodeID, reqID string, t *schema.Task) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acked[reqID] = true
	if t == nil {
		return
	}
	if t.Job != nil {
		return // the node changes it itself; checked as a job
	}
	m := r.tasks[nodeID]
	if m == nil {
		m = map[string]schema.Task{}
		r.tasks[nodeID] = m
	}
	if prev, ok := m[t.TaskID]; ok && prev.UpdatedAt.After(t.UpdatedAt) {
		return
	}
	m[t.TaskID] = *t
}

func (r *Record) fail(clientID string, err error) {
	code := "transport"
	var se *schema.Error
	switch {
	case errors.As(err, &se):
		code = string(se.Code)
	case errors.Is(err, context.DeadlineExceeded):
		code = "timeout"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[code]++
	if len(r.errList) < 20 {
		r.errList = append(r.errList, fmt.Sprintf("%s: %v", clientID, err))
	}
}

// Load is the client load of a run: clients per node, each making calls one
// after the other (creating tasks and updating its own counter task), and a
// job task per node from time to time.
type Load struct {
	c        *Cluster
	nc       *nats.Conn
	rec      *Record
	stopping atomic.Bool // no new calls; those in flight finish
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// StartLoad connects the clients (through their own proxies, so NATS server
// faults reach them) and starts perNode clients on every node.
func (c *Cluster) StartLoad(ctx context.Context, perNode int, jobEvery time.Duration) (*Load, error) {
	urls, err := c.ownerURLs("clients")
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(urls, nats.Name("chaos-clients"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(3))
	if err != nil {
		return nil, fmt.Errorf("chaos: clients' connection: %w", err)
	}
	l := &Load{c: c, nc: nc, rec: newRecord()}
	var clients []*client.Client
	for _, node := range c.nodes {
		for i := range perNode + 1 {
			id := fmt.Sprintf("chaos-%s-%d", node, i)
			cl, err := client.New(nc, id, node)
			if err != nil {
				l.close(clients)
				return nil, fmt.Errorf("chaos: client %s: %w", id, err)
			}
			clients = append(clients, cl)
			l.rec.clientNode[id] = node
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	for i, cl := range clients {
		l.wg.Add(1)
		if i%(perNode+1) == perNode {
			go l.jobs(lctx, cl, jobEvery) // the last client of each node makes jobs
			continue
		}
		go l.calls(lctx, cl)
	}
	go func() { <-lctx.Done(); l.close(clients) }()
	return l, nil
}

func (l *Load) close(clients []*client.Client) {
	for _, cl := range clients {
		cl.Close()
	}
}

// calls makes one call after the other until ctx ends: a create, then
// updates of the client's counter task and more creates.
func (l *Load) calls(ctx context.Context, cl *client.Client) {
	defer l.wg.Done()
	var counter string
	for j := 0; ctx.Err() == nil && !l.stopping.Load(); j++ {
		op, args := schema.OpTaskCreate, any(schema.TaskCreateArgs{Title: fmt.Sprintf("%s-%d", cl.ClientID(), j)})
		if counter != "" && j%2 == 0 {
			op, args = schema.OpTaskUpdate, schema.TaskUpdateArgs{TaskID: counter, Checkpoint: json.RawMessage(fmt.Sprintf(`{"n":%d}`, j))}
		}
		t, ok := l.do(ctx, cl, op, args)
		if ok && counter == "" {
			counter = t.TaskID
		}
		if !ok {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// jobs creates a job task (20 steps of 0.25 s) every `every`.
func (l *Load) jobs(ctx context.Context, cl *client.Client, every time.Duration) {
	defer l.wg.Done()
	for n := 0; ctx.Err() == nil && !l.stopping.Load(); n++ {
		t, ok := l.do(ctx, cl, schema.OpTaskCreate, schema.TaskCreateArgs{Title: fmt.Sprintf("job-%s-%d", cl.NodeID(), n),
			Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 20, StepSeconds: 0.25}})
		if ok {
			l.rec.mu.Lock()
			l.rec.jobs[cl.NodeID()] = append(l.rec.jobs[cl.NodeID()], t.TaskID)
			l.rec.mu.Unlock()
		}
		for end := time.Now().Add(every); time.Now().Before(end) && ctx.Err() == nil && !l.stopping.Load(); {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// do makes one call and records it. A call cut short by the end of the run
// (ctx cancelled) is not an error: its request id stays unacknowledged.
func (l *Load) do(ctx context.Context, cl *client.Client, op string, args any) (*schema.Task, bool) {
	reqID := uuid.NewString()
	l.rec.call(cl.ClientID(), reqID)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	raw, err := cl.DoID(cctx, reqID, op, args)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			l.rec.fail(cl.ClientID(), err)
		}
		return nil, false
	}
	var t schema.Task
	if err := json.Unmarshal(raw, &t); err != nil {
		l.rec.fail(cl.ClientID(), err)
		return nil, false
	}
	l.rec.ack(cl.NodeID(), reqID, &t)
	return &t, true
}

// Stop ends the load: no new call starts, and every call in flight gets its
// answer (or its error) before the clients and their connection close, so
// each request is either acknowledged or failed, none left in doubt.
func (l *Load) Stop() *Record {
	l.stopping.Store(true)
	l.wg.Wait()
	l.cancel()
	l.nc.Close()
	return l.rec
}

// tap records, live, every journal entry: which request ids were journaled,
// how often, and in what order, per node.
type tap struct {
	mu    sync.Mutex
	order map[string][]string // node -> request ids in journal order
	count map[string]int
	stop  func()
}

func (c *Cluster) tapJournal(ctx context.Context) (*tap, error) {
	cons, err := c.js().OrderedConsumer(ctx, schema.StreamJournal, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.JournalSubjects}})
	if err != nil {
		return nil, err
	}
	t := &tap{order: map[string][]string{}, count: map[string]int{}}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var je schema.JournalEntry
		if json.Unmarshal(m.Data(), &je) != nil || je.RequestID == "" {
			return
		}
		node := m.Subject()[len(schema.JournalSubject("")):]
		t.mu.Lock()
		t.order[node] = append(t.order[node], je.RequestID)
		t.count[je.RequestID]++
		t.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	t.stop = cc.Stop
	return t, nil
}

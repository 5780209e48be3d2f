package chaos

import (
	"context"
	"sync"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// sample is one probe of one node by the harness.
type sample struct {
	At      time.Time
	Node    string
	Healthy bool
}

// prober asks every node for its health every interval, straight (not
// through a proxy), and keeps what it saw; it also notes the leader's term.
type prober struct {
	c      *Cluster
	mu     sync.Mutex
	seen   []sample
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *Cluster) startProber(ctx context.Context, every time.Duration) *prober {
	ctx, cancel := context.WithCancel(ctx)
	p := &prober{c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			p.probe(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *prober) probe(ctx context.Context) {
	var wg sync.WaitGroup
	for _, id := range p.c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := p.c.Health(ctx, id)
			s := sample{At: time.Now(), Node: id, Healthy: err == nil && h.Healthy}
			p.mu.Lock()
			p.seen = append(p.seen, s)
			p.mu.Unlock()
		}()
	}
	if h, err := p.c.ClusterHealth(ctx); err == nil && h.Leader != "" {
		p.c.noteTerm(h.Term, h.Leader)
	}
	wg.Wait()
}

func (p *prober) stop() []sample {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

// roller starts a roll of every node from time to time, when none runs.
type roller struct {
	c      *Cluster
	mu     sync.Mutex
	rolls  []string
	refuse map[string]int // refusals by code
	cancel context.CancelFunc
	done   chan struct{}
}

// RollBudget is the max_unavailable of the harness's rolls.
const RollBudget = 1

func (c *Cluster) startRoller(ctx context.Context, every time.Duration) *roller {
	ctx, cancel := context.WithCancel(ctx)
	r := &roller{c: c, cancel: cancel, done: make(chan struct{}), refuse: map[string]int{}}
	go func() {
		defer close(r.done)
		wait := every
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			// A refused start (a node unhealthy under a fault: the system is
			// not ready) is tried again soon; a started roll waits its turn.
			wait = every
			if !r.roll(ctx) {
				wait = 2 * time.Second
			}
		}
	}()
	return r
}

// roll starts a roll unless one runs; it reports whether one runs now.
func (r *roller) roll(ctx context.Context) bool {
	if h, err := r.c.ClusterHealth(ctx); err != nil || h.ActiveRolls > 0 {
		return err == nil
	}
	req := schema.DefaultRollRequest()
	req.Selector = schema.Selector{Group: "default"}
	req.MaxUnavailable, req.MinHealthyTime, req.HealthyDeadline = RollBudget, 1, 30
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st schema.RollStatus
	err := r.c.obs().RequestJSON(cctx, schema.ClusterSubject(schema.OpRollStart), req, nil, &st)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		code := "error"
		if se, ok := err.(*schema.Error); ok {
			code = string(se.Code)
		}
		r.refuse[code]++
		return false
	}
	r.rolls = append(r.rolls, st.RollID)
	return true
}

func (r *roller) stop() []string {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rolls
}

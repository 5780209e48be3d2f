package chaos

import (
	"context"
	"sync"
	"time"
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

package dashboard_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/restartcoord/restartcoord/dashboard"
	"github.com/restartcoord/restartcoord/schema"
)

// simFleet publishes the heartbeats of n simulated nodes on the real bus,
// each once a second (spread over the second), as n supervisors would;
// every round a tenth of them report a different buffered count, so the
// page has rows to update all the time, not only the measured one.
type simFleet struct {
	mu   sync.Mutex
	pids map[string]int
	ids  []string
	stop chan struct{}
	done chan struct{}
}

func startSimFleet(b *testing.B, e *env, n int) *simFleet {
	f := &simFleet{pids: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	for i := range n {
		id := fmt.Sprintf("sim-%04d", i+1)
		f.ids = append(f.ids, id)
		f.pids[id] = 10000 + i
	}
	start := time.Now().UTC()
	go func() {
		defer close(f.done)
		const slots = 100 // one batch every 10 ms
		tick := time.NewTicker(time.Second / slots)
		defer tick.Stop()
		for round := 0; ; round++ {
			for s := range slots {
				select {
				case <-f.stop:
					return
				case <-tick.C:
				}
				for i := s; i < n; i += slots {
					id := f.ids[i]
					f.mu.Lock()
					pid := f.pids[id]
					f.mu.Unlock()
					buffered := 0
					if (i+round)%10 == 0 {
						buffered = round % 7
					}
					f.publish(b, e, id, i, pid, buffered, start)
				}
			}
		}
	}()
	b.Cleanup(func() { close(f.stop); <-f.done })
	return f
}

func (f *simFleet) publish(b *testing.B, e *env, id string, prio, pid, buffered int, started time.Time) {
	hb := schema.Heartbeat{Type: schema.TypeHeartbeat, NodeID: id, Group: "sim", Priority: prio, Phase: schema.PhaseIdle,
		Healthy: true, WorkerPID: pid, Version: "bench", Timestamp: time.Now().UTC(), BufferedRequests: buffered,
		ActiveConnections: 3, WorkerStartedAt: &started}
	data, _ := json.Marshal(hb)
	if err := e.conn.Publish(schema.HeartbeatSubject(id), data); err != nil {
		b.Error(err)
	}
}

// BenchmarkDashboard1000Nodes: 1,000 simulated nodes heartbeat on a real
// embedded NATS; the dashboard (default settings: at most 4 pushes a
// second) serves a real headless Chromium. Each iteration changes one
// node's worker pid (a heartbeat, as after a restart) and measures, in the
// browser, when the row shows it: the time from the publish to the DOM.
// Meanwhile the page measures its own responsiveness: the gaps between
// animation frames and the longest task on the main thread.
func BenchmarkDashboard1000Nodes(b *testing.B) {
	const nodes = 1000
	ctx := browser(b, 1280, 800)
	e := newNATS(b)
	e.startDashboard(dashboard.Config{})
	f := startSimFleet(b, e, nodes)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.web.URL+"/")); err != nil {
		b.Fatal(err)
	}
	waitFor(b, ctx, "1,000 rows", fmt.Sprintf(`document.querySelectorAll('#fleet-body [data-node]').length === %d`, nodes), 30*time.Second)
	// The page records when each measured pid first shows (wall clock, as
	// Go's), every frame gap, and the longest task.
	eval[bool](b, ctx, `(function(){
		window.__seen = {}; window.__frames = []; window.__longest = 0;
		new MutationObserver(function(recs){
			var now = performance.timeOrigin + performance.now();
			recs.forEach(function(r){ r.addedNodes.forEach(function(tr){
				if (!tr.querySelector) return;
				var c = tr.querySelector('[data-field="worker_pid"]'); if (!c) return;
				var pid = Number(c.textContent); if (pid >= 500000 && !(pid in window.__seen)) window.__seen[pid] = now; }); });
		}).observe(document.getElementById('fleet-body'), {childList: true});
		var last = performance.now();
		(function frame(t){ window.__frames.push(t - last); last = t; requestAnimationFrame(frame); })(last);
		try { new PerformanceObserver(function(l){ l.getEntries().forEach(function(en){ window.__longest = Math.max(window.__longest, en.duration); }); })
			.observe({type: 'longtask', buffered: false}); } catch (e) {}
		return true; })()`)
	lat := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		k := rand.IntN(nodes)
		id, pid := f.ids[k], 500000+i
		f.mu.Lock()
		f.pids[id] = pid
		f.mu.Unlock()
		sent := float64(time.Now().UnixMicro()) / 1000
		f.publish(b, e, id, k, pid, 0, time.Now().UTC())
		seen, err := chromedp.Run(ctx, chromedp.Poll[float64](fmt.Sprintf(`window.__seen[%d]`, pid),
			chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
		if err != nil {
			b.Fatalf("pid %d of %s never shown: %v", pid, id, err)
		}
		lat = append(lat, seen-sent)
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond) // off the push cadence
	}
	b.StopTimer()
	frames := eval[[]float64](b, ctx, `window.__frames.slice(1)`)
	longest := eval[float64](b, ctx, `window.__longest`)
	slices.Sort(lat)
	slices.Sort(frames)
	b.ReportMetric(pct(lat, 50), "p50-ms")
	b.ReportMetric(pct(lat, 99), "p99-ms")
	b.ReportMetric(lat[len(lat)-1], "max-ms")
	b.ReportMetric(pct(frames, 50), "frame-p50-ms")
	b.ReportMetric(pct(frames, 99), "frame-p99-ms")
	b.ReportMetric(longest, "longtask-max-ms")
	b.Logf("%d samples over %d nodes: state change to DOM p50 %.0f ms, p99 %.0f ms, max %.0f ms; %d frames: gap p50 %.1f ms, p99 %.1f ms, max %.1f ms; longest task %.0f ms",
		len(lat), nodes, pct(lat, 50), pct(lat, 99), lat[len(lat)-1], len(frames), pct(frames, 50), pct(frames, 99), frames[len(frames)-1], longest)
}

// pct is the p-th percentile of sorted xs (nearest rank).
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(float64(len(xs))*p/100+0.5) - 1
	return xs[max(0, min(len(xs)-1, i))]
}

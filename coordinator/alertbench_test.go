package coordinator_test

// Alert delivery benchmarks of issue 12: latency from an alert to the fake
// PagerDuty's trigger (publish to received, and SIGKILL of a whole node to
// received), and a storm of 1,000 alerts over 50 nodes (notifications,
// alerts lost, CPU).
//
//	go test ./coordinator -run '^$' -bench '^BenchmarkAlert' -benchtime 50x -timeout 20m
//
// The figures are custom metrics (ns/op suppressed); nothing is asserted on
// timings, only that no alert is lost (docs/BENCHMARKS.md judges them).
// The harness is bench_test.go's (testing.TB); all are skipped under -short.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/restartcoord/restartcoord/alerting"
	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

// benchReceivers are a PagerDuty fake (critical alerts, the shipped
// routing) and a webhook fake (information), with a configuration of
// groupWait read by alerting.Parse.
type benchReceivers struct {
	pd   *notifytest.PagerDutyFake
	hook *notifytest.WebhookFake
	cfg  alerting.Config
}

func newBenchReceivers(tb testing.TB, groupWait time.Duration) *benchReceivers {
	tb.Helper()
	dir := tb.TempDir()
	key := []byte("0123456789abcdef0123456789abcdef")
	r := &benchReceivers{pd: notifytest.NewPagerDuty(tb), hook: notifytest.NewWebhook(tb, key)}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	text := fmt.Sprintf(`group_wait: %s
group_interval: 1s
repeat_interval: 1h
receivers:
  - name: pagerduty
    type: pagerduty
    url: %s
    routing_key_file: %s
  - name: webhook
    type: webhook
    url: %s
    secret_file: %s
`, groupWait, r.pd.URL(), write("pd.key", "R0UT1NGKEY0123456789abcdef012345"), r.hook.URL(), write("hook.secret", string(key)))
	cfg, err := alerting.Parse([]byte(text))
	if err != nil {
		tb.Fatal(err)
	}
	r.cfg = cfg
	return r
}

// raise publishes a firing alert into ORCH_ALERTS as a node does.
func (f *benchFleet) raise(kind, node string) {
	a := schema.Alert{Type: schema.TypeAlert, AlertID: uuid.NewString(), Severity: schema.AlertKinds[kind], Kind: kind,
		Status: schema.AlertStatusFiring, NodeID: node, Message: kind + " on " + node, Timestamp: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.bs.PublishDurable(ctx, schema.AlertSubject(a.Severity, kind), a); err != nil {
		f.tb.Fatal(err)
	}
}

// BenchmarkAlertLatency: group_wait 1ms (the config accepts any
// non-negative duration; 0 means the 30 s default), one coordinator
// (DefaultConfig) leading; each iteration publishes one firing
// restart_failed (critical) for a new node, so a new fingerprint, and waits
// for the fake PagerDuty's trigger with its dedup key. Reported: median and
// p99 of publish (before the JetStream publish) to received.
func BenchmarkAlertLatency(b *testing.B) {
	if testing.Short() {
		b.Skip("starts NATS and a coordinator")
	}
	f := newBenchFleet(b)
	r := newBenchReceivers(b, time.Millisecond)
	cfg := f.coordConfig("c1", time.Second)
	cfg.Alerts = &r.cfg
	f.startCoordinator(cfg)
	var lat benchDurations
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("b%d", i)
		want := notify.DedupKey(schema.AlertRestartFailed + "/node/" + id)
		t0 := time.Now()
		f.raise(schema.AlertRestartFailed, id)
		evs := r.pd.WaitFor(b, func(e []notifytest.PagerDutyEvent) bool { return len(e) >= i }, 30*time.Second)
		lat = append(lat, time.Since(t0))
		if ev := evs[i-1]; ev.EventAction != "trigger" || ev.DedupKey != want {
			b.Fatalf("PagerDuty got %s %s, want trigger %s", ev.EventAction, ev.DedupKey, want)
		}
	}
	b.Logf("group_wait 1ms, coordinator tick %s: publish to PagerDuty trigger p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d alerts; samples %v",
		cfg.Tick, benchMS(lat.quantile(0.5)), benchMS(lat.quantile(0.99)), benchMS(lat.quantile(1)), len(lat), lat)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(lat.quantile(0.5)), "p50-ms")
	b.ReportMetric(benchMS(lat.quantile(0.99)), "p99-ms")
}

// BenchmarkAlertLatencyNodeKill: the condition. A whole node
// (supervisor and worker) runs as its own process group, heartbeating every
// second like the coordinator (DefaultConfig: 3 missed heartbeats, then a
// 200 ms health request; tick 250 ms); at a random moment of its heartbeat
// period the group is killed with SIGKILL, and the time to the fake
// PagerDuty's trigger for health_check_failed on that node is measured
// (group_wait 1ms). It is split by the alert's timestamp (the coordinator
// declaring the node failed, carried in the trigger's payload) into
// detection and delivery. Reported: median and p99 of each, and the
// detection target of issue 4 (3 heartbeats + 200 ms) and that + 100 ms.
func BenchmarkAlertLatencyNodeKill(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a node process per iteration")
	}
	const hb = time.Second
	f := newBenchFleet(b)
	r := newBenchReceivers(b, time.Millisecond)
	cfg := f.coordConfig("c1", hb)
	cfg.Alerts = &r.cfg
	f.startCoordinator(cfg)
	var total, detect, deliver benchDurations
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		id := fmt.Sprintf("kill%03d", i)
		cmd := f.startNodeGroup(id, i, hb)
		f.waitFor(30*time.Second, id+" healthy in the coordinator's view", func() bool {
			n, ok := f.nodes()[id]
			return ok && n.Healthy
		})
		time.Sleep(time.Duration(time.Now().UnixNano() % int64(hb))) // any moment of the heartbeat period
		want := notify.DedupKey(schema.AlertHealthCheckFailed + "/node/" + id)
		b.StartTimer()
		killed := time.Now()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		var got notifytest.PagerDutyEvent
		r.pd.WaitFor(b, func(e []notifytest.PagerDutyEvent) bool {
			for _, ev := range e {
				if ev.DedupKey == want && ev.EventAction == "trigger" {
					got = ev
					return true
				}
			}
			return false
		}, 60*time.Second)
		received := time.Now()
		b.StopTimer()
		_ = cmd.Wait()
		declared, err := time.Parse(time.RFC3339Nano, got.Payload.Timestamp)
		if err != nil {
			b.Fatalf("trigger timestamp %q: %v", got.Payload.Timestamp, err)
		}
		total = append(total, received.Sub(killed))
		detect = append(detect, declared.Sub(killed))
		deliver = append(deliver, received.Sub(declared))
		if err := f.request(schema.ClusterNodeSubject(id, "forget"), map[string]any{}, &schema.ClusterNode{}); err != nil {
			b.Fatalf("forget %s: %v", id, err)
		}
		b.StartTimer()
	}
	target := time.Duration(cfg.MissedHeartbeats)*hb + 200*time.Millisecond
	b.Logf("heartbeat %s, %d missed, tick %s, group_wait 1ms: SIGKILL to PagerDuty trigger p50 %.0f ms, p99 %.0f ms (detection p50 %.0f, p99 %.0f; declared to received p50 %.1f, p99 %.1f) over %d kills; detection target %.0f ms, alert target %.0f ms; samples %v",
		hb, cfg.MissedHeartbeats, cfg.Tick, benchMS(total.quantile(0.5)), benchMS(total.quantile(0.99)),
		benchMS(detect.quantile(0.5)), benchMS(detect.quantile(0.99)), benchMS(deliver.quantile(0.5)), benchMS(deliver.quantile(0.99)),
		len(total), benchMS(target), benchMS(target+100*time.Millisecond), total)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(total.quantile(0.5)), "p50-ms")
	b.ReportMetric(benchMS(total.quantile(0.99)), "p99-ms")
	b.ReportMetric(benchMS(detect.quantile(0.5)), "detect-p50-ms")
	b.ReportMetric(benchMS(detect.quantile(0.99)), "detect-p99-ms")
	b.ReportMetric(benchMS(deliver.quantile(0.5)), "deliver-p50-ms")
	b.ReportMetric(benchMS(deliver.quantile(0.99)), "deliver-p99-ms")
	b.ReportMetric(benchMS(target), "detect-target-ms")
}

// startNodeGroup is startNodeProcess with the node in its own process
// group, so that its worker can be killed with it.
func (f *benchFleet) startNodeGroup(id string, priority int, hb time.Duration) *exec.Cmd {
	f.tb.Helper()
	cfg := f.nodeConfig(id, priority, hb)
	cfg.Logger = nil
	data, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envNode+"="+string(data))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.tb.Fatal(err)
	}
	f.tb.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	f.waitFor(60*time.Second, "node "+id+" healthy", func() bool {
		var h schema.Health
		return f.request(schema.NodeSubject(id, schema.OpHealth), nil, &h) == nil && h.Healthy
	})
	return cmd
}

// BenchmarkAlertStorm: 1,000 firing information alerts published evenly
// over 10 s across 50 nodes, each node with one of four kinds (so 50
// fingerprints, 20 alerts each), routed to the fake webhook; group_wait 2s
// (shortened from the 30 s default so that the benchmark ends). After the
// last publish it waits group_wait + 3 s. Reported per storm: notifications
// the webhook received (should be 50, one per fingerprint), fingerprints
// never notified (must be 0), the longest wait from a fingerprint's first
// alert to its notification, and the CPU (user+system, getrusage of this
// process: the coordinator runs in it, as do NATS, the fake and the
// publishing) over the storm, with this process's idle CPU rate measured
// before for comparison.
func BenchmarkAlertStorm(b *testing.B) {
	if testing.Short() {
		b.Skip("10 s storms")
	}
	const alerts, nodes = 1000, 50
	const groupWait = 2 * time.Second
	window := 10 * time.Second
	kinds := []string{schema.AlertBackupAge, schema.AlertStateSize, schema.AlertMaintenanceDue, schema.AlertLogSize}
	f := newBenchFleet(b)
	r := newBenchReceivers(b, groupWait)
	cfg := f.coordConfig("c1", time.Second)
	cfg.Alerts = &r.cfg
	f.startCoordinator(cfg)

	idle := 3 * time.Second
	c0 := rusageCPU(b)
	time.Sleep(idle)
	idleRate := (rusageCPU(b) - c0).Seconds() / idle.Seconds()

	var notified, lost int
	var cpu, wall, slowest time.Duration
	storm := 0
	for b.Loop() {
		storm++
		seen := len(r.hook.Events())
		first := map[string]time.Time{} // fingerprint -> first alert published
		arrived := map[string]time.Time{}
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // when each notification arrived, to 5 ms
			defer wg.Done()
			for {
				now := time.Now()
				evs := r.hook.Events()
				mu.Lock()
				for _, ev := range evs[seen:] {
					fp := ev.Payload.Kind + "/node/" + ev.Payload.NodeID
					if _, ok := arrived[fp]; !ok {
						arrived[fp] = now
					}
				}
				mu.Unlock()
				seen = len(evs)
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		cpu0, t0 := rusageCPU(b), time.Now()
		for j := range alerts {
			if d := time.Until(t0.Add(window * time.Duration(j) / alerts)); d > 0 {
				time.Sleep(d)
			}
			n := j % nodes
			node := fmt.Sprintf("s%d-%02d", storm, n)
			kind := kinds[n%len(kinds)]
			fp := kind + "/node/" + node
			mu.Lock()
			if _, ok := first[fp]; !ok {
				first[fp] = time.Now()
			}
			mu.Unlock()
			f.raise(kind, node)
		}
		published := time.Since(t0)
		time.Sleep(groupWait + 3*time.Second)
		cpu += rusageCPU(b) - cpu0
		wall += time.Since(t0)
		close(stop)
		wg.Wait()
		mine, prefix := 0, fmt.Sprintf("s%d-", storm)
		for _, ev := range r.hook.Events() {
			if strings.HasPrefix(ev.Payload.NodeID, prefix) {
				mine++
			}
		}
		notified += mine
		for fp, t := range first {
			at, ok := arrived[fp]
			if !ok {
				lost++
				b.Logf("storm %d: %s never notified", storm, fp)
				continue
			}
			slowest = max(slowest, at.Sub(t))
		}
		b.Logf("storm %d: %d alerts published in %s over %d fingerprints: %d notifications, %d fingerprints notified",
			storm, alerts, published.Round(time.Millisecond), len(first), mine, len(arrived))
	}
	if lost > 0 {
		b.Errorf("%d fingerprints never notified", lost)
	}
	per := float64(storm)
	b.Logf("%d storms of %d alerts over %d fingerprints, group_wait %s: %.0f notifications per storm, %d lost, slowest first alert to notification %s, CPU %.2f s per storm (%.0f ms/s over %.1f s; idle %.0f ms/s)",
		storm, alerts, nodes, groupWait, float64(notified)/per, lost, slowest.Round(time.Millisecond), cpu.Seconds()/per,
		1000*cpu.Seconds()/wall.Seconds(), wall.Seconds()/per, 1000*idleRate)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(notified)/per, "notifications")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(benchMS(slowest), "max-first-to-notified-ms")
	b.ReportMetric(cpu.Seconds()/per, "cpu-s")
	b.ReportMetric(1000*idleRate, "idle-cpu-ms/s")
}

// rusageCPU is this process's user+system CPU time so far.
func rusageCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/dashboard"
	"github.com/restartcoord/restartcoord/schema"
)

// browser starts a headless Chromium (Debian's chromium package) for the
// test and returns a tab's context. Without one the test skips, except in
// CI (CI=true), where .ci/run installs it and its absence is a failure.
func browser(t testing.TB, width, height int) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no chromium in CI: .ci/run must install Debian's chromium package")
		}
		t.Skip("no chromium on PATH (apt-get install chromium): the browser tests skip")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(width, height), chromedp.Flag("hide-scrollbars", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("chromium %s did not start: %v", path, err)
	}
	return ctx
}

// artifacts is where the screenshots go: $DASHBOARD_ARTIFACTS, else a
// temporary directory of the test.
func artifacts(t testing.TB) string {
	if d := os.Getenv("DASHBOARD_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func screenshot(t testing.TB, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// waitFor polls a JavaScript predicate every 10 ms until it holds
// or d passes, and returns how long that took.
func waitFor(t testing.TB, ctx context.Context, what, predicate string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(d)))
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s: not within %s: %v", what, d, err)
	}
	return took
}

func eval[T any](t testing.TB, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

func cell(node, field string) string {
	return fmt.Sprintf(`(document.querySelector('#fleet-body [data-node="%s"] [data-field="%s"]')||{}).textContent`, node, field)
}

// The dashboard in a real browser against a real fleet (three nodes, a
// coordinator, embedded NATS): the table lists every node; a restart sent
// with `nats req` shows (new worker pid, last restart) within 1 s of its
// reply, without a reload; a roll's progress bar moves; a real alert
// shows; the page fits a phone's width. A screenshot of each state is kept.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t, 1280, 800)
	dir := artifacts(t)
	e := newNATS(t)
	e.startNodes(3)
	// One restart in the hour is the limit, so a node's second restart
	// raises restart_frequency: a real alert from the real coordinator.
	e.startCoordinator(3, func(c *coordinator.Config) { c.Ladder.FrequencyLimit = 1 })
	e.startDashboard(dashboard.Config{})

	if err := chromedp.Do(ctx, chromedp.Navigate(e.web.URL+"/")); err != nil {
		t.Fatal(err)
	}
	// A reload would lose this mark: every later check also proves the
	// page was updated in place.
	eval[bool](t, ctx, `window.__noReload = true`)
	waitFor(t, ctx, "live stream open", `document.body.dataset.live === "open"`, 10*time.Second)

	t.Run("fleet", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			id := fmt.Sprintf("node-%d", i)
			if got := eval[string](t, ctx, cell(id, "health")); got != "healthy" {
				t.Errorf("%s health cell = %q, want healthy", id, got)
			}
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#fleet-body [data-node]').length`); n != 3 {
			t.Errorf("fleet table has %d rows, want 3", n)
		}
		screenshot(t, ctx, dir, "fleet.png")
	})

	t.Run("restart appears within 1s", func(t *testing.T) {
		before := eval[string](t, ctx, cell("node-1", "worker_pid"))
		var res schema.RestartResult
		out := e.natsReq(schema.NodeSubject("node-1", schema.OpRestart), `{"reason":"manual_request"}`)
		replied := time.Now()
		if err := json.Unmarshal(out, &res); err != nil || !res.Success || res.NewPID == 0 {
			t.Fatalf("restart reply: %v: %s", err, out)
		}
		if strconv.Itoa(res.NewPID) == before {
			t.Fatalf("new pid %d equals the old one", res.NewPID)
		}
		// Both within 1 s of the reply: the new worker's pid, and a last
		// restart at the restart's completion (data-at is its RFC 3339 time).
		waitFor(t, ctx, "new worker pid in the table", cell("node-1", "worker_pid")+` === "`+strconv.Itoa(res.NewPID)+`"`,
			time.Second-time.Since(replied))
		t.Logf("new worker pid %d shown %s after the restart's reply (was %s)", res.NewPID, time.Since(replied).Round(time.Millisecond), before)
		at := res.CompletedAt.UTC().Truncate(time.Second).Format(time.RFC3339)
		waitFor(t, ctx, "last restart in the table", `document.querySelector('#fleet-body [data-node="node-1"] [data-field="last_restart"]').dataset.at === "`+at+`"`,
			time.Second-time.Since(replied))
		t.Logf("last restart %s shown %s after the reply", at, time.Since(replied).Round(time.Millisecond))
		if !eval[bool](t, ctx, `window.__noReload === true`) {
			t.Error("the page was reloaded")
		}
		screenshot(t, ctx, dir, "restart.png")
	})

	t.Run("roll progress bar moves", func(t *testing.T) {
		// Record every value the bar takes, as the page shows it.
		eval[bool](t, ctx, `(function(){ window.__bar = [];
			new MutationObserver(function(){ var p = document.querySelector('#roll-roll-dash progress');
				if (p) { var v = Number(p.value); if (window.__bar[window.__bar.length-1] !== v) window.__bar.push(v); } })
			.observe(document.getElementById('rolls'), {childList: true, subtree: true}); return true; })()`)
		out := e.natsReq(schema.ClusterSubject(schema.OpRollStart),
			`{"selector":{"group":"default"},"max_unavailable":1,"min_healthy_time":1,"roll_id":"roll-dash"}`)
		var st schema.RollStatus
		if err := json.Unmarshal(out, &st); err != nil || st.Total != 3 {
			t.Fatalf("roll start: %v: %s", err, out)
		}
		waitFor(t, ctx, "roll shown with a node being restarted",
			`!!document.querySelector('#roll-roll-dash [data-current]')`, 10*time.Second)
		waitFor(t, ctx, "progress past the first node",
			`(function(){ var p = document.querySelector('#roll-roll-dash progress'); return p && p.value >= 1 && p.value < 3; })()`, 30*time.Second)
		screenshot(t, ctx, dir, "roll.png")
		waitFor(t, ctx, "roll completed", `!!document.querySelector('#roll-roll-dash[data-state="completed"]')`, 60*time.Second)
		bar := eval[[]float64](t, ctx, `window.__bar`)
		t.Logf("progress bar values seen: %v", bar)
		if len(bar) < 3 || bar[len(bar)-1] != 3 {
			t.Errorf("progress bar went %v, want it to move step by step to 3", bar)
		}
		for i := 1; i < len(bar); i++ {
			if bar[i] < bar[i-1] {
				t.Errorf("progress bar went back: %v", bar)
			}
		}
		if !eval[bool](t, ctx, `window.__noReload === true`) {
			t.Error("the page was reloaded")
		}
	})

	t.Run("alert shows", func(t *testing.T) {
		// node-1 has restarted twice (by hand, then in the roll): over the
		// limit of one, the coordinator raised restart_frequency.
		took := waitFor(t, ctx, "restart_frequency alert for node-1",
			`!!document.querySelector('#alerts li[data-kind="restart_frequency"][data-node="node-1"]')`, 20*time.Second)
		t.Logf("alert shown (waited %s)", took.Round(time.Millisecond))
		if sev := eval[string](t, ctx, `document.querySelector('#alerts li[data-kind="restart_frequency"]').dataset.severity`); sev != "warning" {
			t.Errorf("alert severity = %q, want warning", sev)
		}
		screenshot(t, ctx, dir, "alert.png")
	})

	t.Run("phone width", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "layout at 390 px", `window.innerWidth === 390`, 5*time.Second)
		if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("page is %d px wide at a 390 px screen: it scrolls sideways", w)
		}
		// The rows stack as cards: each cell shows, labelled.
		if d := eval[string](t, ctx, `getComputedStyle(document.querySelector('#fleet-body [data-node]')).display`); d != "block" {
			t.Errorf("a row's display at phone width = %q, want block (stacked)", d)
		}
		screenshot(t, ctx, dir, "phone.png")
	})
}

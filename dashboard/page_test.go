package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/dashboard"
	"github.com/restartcoord/restartcoord/schema"
)

func get(t *testing.T, url string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), resp.Header
}

var assetRE = regexp.MustCompile(`(?:src|href)="([^"]*)"`)

// The first HTML response, from a dashboard that has not started following
// the fleet yet, already lists every node with its worker pid (rendered on
// the server), and neither the page nor its assets name any other origin.
func TestFirstPageListsEveryNode(t *testing.T) {
	e := newNATS(t)
	e.startNodes(3)
	e.startCoordinator(3, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: e.url, Name: "dashboard"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d, err := dashboard.New(conn, dashboard.Config{})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(d.Handler()) // no Run: the page must not need it
	defer web.Close()

	var l schema.NodeList
	if err := e.conn.RequestJSON(ctx, schema.ClusterSubject(schema.OpClusterNodes), schema.NodesRequest{}, nil, &l); err != nil {
		t.Fatal(err)
	}
	page, hdr := get(t, web.URL+"/")
	for _, n := range l.Nodes {
		row := regexp.MustCompile(`(?s)<div data-node="` + n.NodeID + `"[^>]*>.*?</div>`).FindString(page)
		if row == "" {
			t.Fatalf("the first page has no row for %s:\n%s", n.NodeID, page)
		}
		pid := fmt.Sprintf(`data-field="worker_pid">%d<`, n.WorkerPID)
		if !strings.Contains(row, pid) {
			t.Errorf("row of %s does not show worker pid %d:\n%s", n.NodeID, n.WorkerPID, row)
		}
		if !strings.Contains(row, `data-health="healthy"`) {
			t.Errorf("row of %s is not shown healthy:\n%s", n.NodeID, row)
		}
	}
	if got := strings.Count(page, "<div data-node="); got != len(l.Nodes) {
		t.Errorf("the page has %d node rows, want %d", got, len(l.Nodes))
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q, want one that loads nothing from elsewhere", csp)
	}

	docs := map[string]string{"/": page}
	for _, m := range assetRE.FindAllStringSubmatch(page, -1) {
		ref := m[1]
		if strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") {
			t.Errorf("the page references %q: want a relative path to an embedded asset", ref)
			continue
		}
		docs[ref], _ = get(t, web.URL+"/"+ref)
	}
	if len(docs) < 3 {
		t.Errorf("the page references %d assets, want the stylesheet and the script", len(docs)-1)
	}
	for name, body := range docs {
		for _, scheme := range []string{"http://", "https://"} {
			if i := strings.Index(body, scheme); i >= 0 {
				t.Errorf("%s names an external URL: %q", name, body[max(0, i-40):min(len(body), i+60)])
			}
		}
	}
}

// The event stream starts with a full snapshot: every node's row as HTML.
func TestEventsStartWithSnapshot(t *testing.T) {
	e := newNATS(t)
	e.startNodes(2)
	e.startCoordinator(2, nil)
	e.startDashboard(dashboard.Config{})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.web.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q, want text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var u struct {
			Full     bool              `json:"full"`
			Rows     map[string]string `json:"rows"`
			Sections map[string]string `json:"sections"`
		}
		if err := json.Unmarshal([]byte(data), &u); err != nil {
			t.Fatalf("event is not JSON: %v: %s", err, data)
		}
		if !u.Full {
			t.Fatalf("first event is not a full snapshot: %s", data)
		}
		for _, id := range []string{"node-1", "node-2"} {
			if !strings.Contains(u.Rows[id], `data-node="`+id+`"`) {
				t.Errorf("snapshot row of %s = %q", id, u.Rows[id])
			}
		}
		for _, s := range []string{"summary", "rolls", "alerts", "report"} {
			if _, ok := u.Sections[s]; !ok {
				t.Errorf("snapshot lacks section %s", s)
			}
		}
		return
	}
	t.Fatalf("no event: %v", sc.Err())
}

// A malformed setting is refused at construction.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  dashboard.Config
	}{
		{"push too often", dashboard.Config{PushEvery: time.Millisecond}},
		{"negative alerts", dashboard.Config{AlertsKept: -1}},
		{"report window too short", dashboard.Config{ReportWindow: time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := dashboard.DefaultConfig()
			if c.cfg.PushEvery != 0 {
				cfg.PushEvery = c.cfg.PushEvery
			}
			if c.cfg.AlertsKept != 0 {
				cfg.AlertsKept = c.cfg.AlertsKept
			}
			if c.cfg.ReportWindow != 0 {
				cfg.ReportWindow = c.cfg.ReportWindow
			}
			if err := cfg.Validate(); err == nil {
				t.Errorf("Validate(%+v) = nil, want an error", c.cfg)
			}
		})
	}
	if err := dashboard.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

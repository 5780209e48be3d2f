package dashboard

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// The page's templates, stylesheet and script are embedded: the dashboard
// works on a machine with no internet (no CDN, no web fonts).
//
//go:embed assets
var assets embed.FS

// summaryView is the header: the fleet in numbers and the coordinators'
// state.
type summaryView struct {
	Total, Healthy int
	Health         *schema.ClusterHealth
	CoordErr       string
	CoordErrFrom   time.Time
}

func (s *store) summaryLocked(sorted []*nodeView, _ time.Time) *summaryView {
	v := &summaryView{Total: len(sorted), Health: s.health, CoordErr: s.coordErr, CoordErrFrom: s.coordErrFrom}
	for _, n := range sorted {
		if n.Health() == "healthy" || n.Health() == "degraded" {
			v.Healthy++
		}
	}
	return v
}

// reportView is the weekly report section.
type reportView struct {
	Report  *report
	Err     string
	History []restart
}

// SLOs lists the report's SLO verdicts in a stable order.
func (r reportView) SLOs() []sloView {
	if r.Report == nil {
		return nil
	}
	var out []sloView
	for k, ok := range r.Report.SLOCompliance {
		out = append(out, sloView{Name: k, OK: ok})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type sloView struct {
	Name string
	OK   bool
}

// Chart draws the restart durations over the report's window as inline SVG
// (no chart library: the page must work offline).
func (r reportView) Chart() chart {
	from, to := time.Now().Add(-7*24*time.Hour), time.Now()
	if r.Report != nil && !r.Report.From.IsZero() && r.Report.To.After(r.Report.From) {
		from, to = r.Report.From, r.Report.To
	}
	var target float64
	if r.Report != nil {
		target = r.Report.Targets["duration"]
	}
	return buildChart(r.History, from, to, target)
}

// chart is an SVG scatter plot: one dot per restart, x its start, y its
// duration.
type chart struct {
	W, H, Left, Right, Top, Bottom float64
	Dots                           []dot
	XTicks, YTicks                 []tick
	Mid                            float64 // the plot's horizontal middle
	Target                         float64 // y of the duration target line, 0 if none
	Empty                          bool
}

type dot struct {
	X, Y  float64
	Class string
	Title string
}

type tick struct {
	Pos   float64
	Label string
}

func buildChart(hist []restart, from, to time.Time, target float64) chart {
	c := chart{W: 720, H: 220, Left: 48, Right: 710, Top: 10, Bottom: 190, Mid: 379}
	// The x axis starts a little before the window's first restart (at
	// least 2 minutes before the end): a week whose restarts all happened
	// this afternoon is drawn as the afternoon, not as dots in one corner.
	first := to
	for _, r := range hist {
		if !r.StartedAt.Before(from) && r.StartedAt.Before(first) {
			first = r.StartedAt
		}
	}
	if start := first.Add(-max(to.Sub(first)/20, time.Minute)); start.After(from) {
		from = start
		if latest := to.Add(-2 * time.Minute); from.After(latest) {
			from = latest
		}
	}
	span := to.Sub(from).Seconds()
	maxY := 1.0
	for _, r := range hist {
		maxY = math.Max(maxY, r.Duration)
	}
	if target > 0 && target < maxY*1.5 {
		maxY = math.Max(maxY, target)
	}
	maxY = niceCeil(maxY)
	xOf := func(t time.Time) float64 {
		f := t.Sub(from).Seconds() / span
		return c.Left + math.Max(0, math.Min(1, f))*(c.Right-c.Left)
	}
	yOf := func(d float64) float64 { return c.Bottom - math.Min(1, d/maxY)*(c.Bottom-c.Top) }
	for _, r := range hist {
		if r.StartedAt.Before(from) || r.StartedAt.After(to) {
			continue
		}
		cls := "ok"
		switch {
		case !r.Success:
			cls = "bad"
		case !r.Graceful:
			cls = "emergency"
		}
		c.Dots = append(c.Dots, dot{X: round1(xOf(r.StartedAt)), Y: round1(yOf(r.Duration)), Class: cls,
			Title: fmt.Sprintf("%s %s %s: %.2f s", r.NodeID, r.Reason, r.StartedAt.Local().Format("Jan 2 15:04:05"), r.Duration)})
	}
	c.Empty = len(c.Dots) == 0
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		c.YTicks = append(c.YTicks, tick{Pos: round1(yOf(v)), Label: trimFloat(v) + " s"})
	}
	for i := 0; i <= 6; i++ {
		t := from.Add(time.Duration(float64(to.Sub(from)) * float64(i) / 6))
		layout := "Jan 2"
		switch {
		case span <= 2*3600:
			layout = "15:04:05"
		case span <= 2*24*3600:
			layout = "15:04"
		}
		c.XTicks = append(c.XTicks, tick{Pos: round1(xOf(t)), Label: t.Local().Format(layout)})
	}
	if target > 0 && target <= maxY {
		c.Target = round1(yOf(target))
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func sortRolls(rs []rollView) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Active() != rs[j].Active() {
			return rs[i].Active()
		}
		return rs[i].Status.StartedAt.After(rs[j].Status.StartedAt)
	})
}

var funcs = template.FuncMap{
	"iso": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"isoT": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"clock": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return t.Local().Format("Jan 2 15:04:05")
	},
	"clockT": func(t time.Time) string { return t.Local().Format("Jan 2 15:04:05") },
	"since": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return fmtDur(time.Since(*t))
	},
	"pid": func(p int) string {
		if p == 0 {
			return "—"
		}
		return fmt.Sprint(p)
	},
	"pct":  func(v float64) string { return trimFloat(v) + "%" },
	"secs": func(v float64) string { return trimFloat(v) + " s" },
	"dash": func(s string) string {
		if s == "" {
			return "—"
		}
		return s
	},
	"label": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"percent": func(done, total int) int {
		if total <= 0 {
			return 0
		}
		return done * 100 / total
	},
}

// fmtDur writes an uptime as the page's script does: seconds only in the
// first minute, so that a thousand uptimes change text once a minute, not
// every second (each change costs the browser a layout).
func fmtDur(d time.Duration) string {
	s := int64(d.Seconds())
	switch {
	case s < 0:
		return "0s"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm", s/60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

func parseTemplates() (*template.Template, error) {
	return template.New("page").Funcs(funcs).ParseFS(assets, "assets/*.html")
}

// pageData is what the page template renders.
type pageData struct {
	Title string
	Snap  snapshot
}

// renderTo executes a named template into a string.
func renderTo(t *template.Template, name string, data any) (string, error) {
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// update is one server-sent event: HTML fragments rendered by the same
// templates as the page, which the script swaps in by id. Rows are keyed by
// node id; sections by element id.
type update struct {
	Seq      uint64            `json:"seq"`
	Full     bool              `json:"full"`
	SentAt   int64             `json:"sent_at"` // Unix milliseconds, for latency measurements
	Rows     map[string]string `json:"rows,omitempty"`
	Order    []string          `json:"order,omitempty"`
	Removed  []string          `json:"removed,omitempty"`
	Sections map[string]string `json:"sections,omitempty"`
}

// render turns a snapshot into an update; nil when nothing changed.
func render(t *template.Template, sn snapshot) (*update, error) {
	u := &update{Seq: sn.Ver, Full: sn.Full, Order: sn.Order, Removed: sn.Removed, Sections: map[string]string{}}
	if len(sn.Rows) > 0 || sn.Full {
		u.Rows = make(map[string]string, len(sn.Rows))
	}
	for _, n := range sn.Rows {
		h, err := renderTo(t, "row", n)
		if err != nil {
			return nil, err
		}
		u.Rows[n.ID] = h
	}
	sections := []struct {
		id   string
		on   bool
		data any
	}{
		{"summary", sn.Summary != nil, sn.Summary},
		{"rolls", sn.RollsOn, sn.Rolls},
		{"alerts", sn.AlertsOn, sn.Alerts},
		{"report", sn.Report != nil, sn.Report},
	}
	for _, s := range sections {
		if !s.on {
			continue
		}
		h, err := renderTo(t, s.id, s.data)
		if err != nil {
			return nil, err
		}
		u.Sections[s.id] = h
	}
	if len(u.Rows) == 0 && len(u.Order) == 0 && len(u.Removed) == 0 && len(u.Sections) == 0 && !u.Full {
		return nil, nil
	}
	return u, nil
}

package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/restartcoord/restartcoord/bus"
)

// Config says how often the dashboard reads the coordinators and how it
// pushes updates. The zero value of a field takes its DefaultConfig value.
type Config struct {
	// Title heads the page ("restartcoord").
	Title string
	// Logger; nil discards.
	Logger *slog.Logger
	// NodesEvery: cluster.nodes and cluster.health are read this often (2 s),
	// and soon after a restart event. Heartbeats and events update rows in
	// between.
	NodesEvery time.Duration
	// RollsEvery: the status of every roll in progress is read this often
	// (1 s), and at once after its events.
	RollsEvery time.Duration
	// ReportEvery: cluster.report and cluster.history are read this often
	// (60 s), and a few seconds after a restart.
	ReportEvery time.Duration
	// ReportWindow is the report's window (7 days: the weekly report).
	ReportWindow time.Duration
	// PushEvery is the shortest gap between two updates sent to browsers
	// (250 ms: at most 4 a second); changes within it are sent together.
	PushEvery time.Duration
	// RequestTimeout bounds each request to the coordinators (5 s).
	RequestTimeout time.Duration
	// AlertsKept: how many recent alerts show (50).
	AlertsKept int
	// KeepEnded: how long a finished roll stays on the page (15 min).
	KeepEnded time.Duration
}

// DefaultConfig is the configuration restartcoord serves.
func DefaultConfig() Config {
	return Config{Title: "restartcoord", NodesEvery: 2 * time.Second, RollsEvery: time.Second,
		ReportEvery: time.Minute, ReportWindow: 7 * 24 * time.Hour, PushEvery: 250 * time.Millisecond,
		RequestTimeout: 5 * time.Second, AlertsKept: 50, KeepEnded: 15 * time.Minute}
}

// ErrInvalidConfig is returned by Validate and New for a setting out of range.
var ErrInvalidConfig = errors.New("dashboard: invalid config")

// Validate reports a setting out of range (ErrInvalidConfig).
func (c Config) Validate() error {
	bad := func(name string, d, lo, hi time.Duration) error {
		if d < lo || d > hi {
			return fmt.Errorf("%w: %s must be %s..%s, got %s", ErrInvalidConfig, name, lo, hi, d)
		}
		return nil
	}
	return errors.Join(
		bad("NodesEvery", c.NodesEvery, 100*time.Millisecond, time.Minute),
		bad("RollsEvery", c.RollsEvery, 100*time.Millisecond, time.Minute),
		bad("ReportEvery", c.ReportEvery, time.Second, time.Hour),
		bad("ReportWindow", c.ReportWindow, time.Minute, 366*24*time.Hour),
		bad("PushEvery", c.PushEvery, 10*time.Millisecond, 10*time.Second),
		bad("RequestTimeout", c.RequestTimeout, 100*time.Millisecond, time.Minute),
		bad("KeepEnded", c.KeepEnded, 0, 24*time.Hour),
		func() error {
			if c.AlertsKept < 1 || c.AlertsKept > 1000 {
				return fmt.Errorf("%w: AlertsKept must be 1..1000, got %d", ErrInvalidConfig, c.AlertsKept)
			}
			return nil
		}())
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Title == "" {
		c.Title = d.Title
	}
	if c.NodesEvery == 0 {
		c.NodesEvery = d.NodesEvery
	}
	if c.RollsEvery == 0 {
		c.RollsEvery = d.RollsEvery
	}
	if c.ReportEvery == 0 {
		c.ReportEvery = d.ReportEvery
	}
	if c.ReportWindow == 0 {
		c.ReportWindow = d.ReportWindow
	}
	if c.PushEvery == 0 {
		c.PushEvery = d.PushEvery
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.AlertsKept == 0 {
		c.AlertsKept = d.AlertsKept
	}
	if c.KeepEnded == 0 {
		c.KeepEnded = d.KeepEnded
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is the dashboard: Run follows the fleet over NATS, Handler serves
// the page and its updates.
type Server struct {
	conn *bus.Conn
	cfg  Config
	log  *slog.Logger
	st   *store
	tmpl *template.Template

	kickNodes, kickRolls, kickReport chan struct{}

	mu      sync.Mutex
	clients map[*client]struct{}
	done    chan struct{} // closed when Run returns: event streams end
	running bool
	loaded  bool // cluster.nodes answered at least once
}

// client is one browser's event stream.
type client struct {
	ch   chan event
	gone chan struct{} // closed when it fell too far behind
}

// New makes a dashboard that reads the fleet through conn (which it does
// not close). It returns ErrInvalidConfig for a bad setting.
func New(conn *bus.Conn, cfg Config) (*Server, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, err := parseTemplates()
	if err != nil {
		return nil, fmt.Errorf("dashboard: templates: %w", err)
	}
	return &Server{conn: conn, cfg: cfg, log: cfg.Logger.WithGroup("dashboard"), st: newStore(cfg.AlertsKept, cfg.KeepEnded),
		tmpl: t, kickNodes: make(chan struct{}, 1), kickRolls: make(chan struct{}, 1), kickReport: make(chan struct{}, 1),
		clients: map[*client]struct{}{}, done: make(chan struct{})}, nil
}

// Run follows the fleet and pushes updates until ctx ends; then the event
// streams it serves end too. It returns an error only if the subscriptions
// could not be made; the coordinators not answering shows on the page.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("dashboard: Run called twice")
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.done)
	unsub, err := s.subscribe()
	if err != nil {
		return err
	}
	defer unsub()
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){s.loadRecent, s.nodesLoop, s.rollsLoop, s.reportLoop, s.pushLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	wg.Wait()
	return nil
}

// Handler serves the page at /, its updates at /events and its assets
// under /assets/. Mount it at the root of a mux beside /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServer(http.FS(static))
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.Path) < 4 || r.URL.Path[len(r.URL.Path)-4:] == "html" {
			http.NotFound(w, r) // the templates are not assets
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /events", s.serveEvents)
	mux.HandleFunc("GET /{$}", s.servePage)
	return secure(mux)
}

// secure adds headers that keep the page to its own assets: nothing loads
// from elsewhere, even if a node id carried markup (the templates escape
// it anyway).
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// servePage renders the whole page on the server, so the first response
// lists every node; if the coordinators have not answered yet, it asks
// them once before rendering.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	s.ensureLoaded(r.Context())
	sn := s.st.since(0, time.Now())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.tmpl.ExecuteTemplate(w, "page", pageData{Title: s.cfg.Title, Snap: sn}); err != nil {
		s.log.Warn("page not rendered", "err", err)
	}
}

// event is one encoded update and the state version it holds.
type event struct {
	seq  uint64
	data []byte
}

// ensureLoaded reads cluster.nodes now if it never answered yet, so that
// what a browser gets first lists every node.
func (s *Server) ensureLoaded(ctx context.Context) {
	s.mu.Lock()
	loaded := s.loaded
	s.mu.Unlock()
	if !loaded {
		_ = s.refreshNodes(ctx)
	}
}

// clientBuffer: updates queued for one browser; one that falls further
// behind is disconnected, and its EventSource reconnects to a full snapshot.
const clientBuffer = 32

// serveEvents streams updates as server-sent events: a full snapshot
// first, then what changed.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	s.ensureLoaded(r.Context())
	c := &client{ch: make(chan event, clientBuffer), gone: make(chan struct{})}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
	}()
	first, firstSeq, err := s.encode(0)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // a proxy in front must not hold events back
	w.WriteHeader(http.StatusOK)
	// retry: a browser that lost the stream tries again after 1 s.
	if _, err := fmt.Fprintf(w, "retry: 1000\n\n"); err != nil {
		return
	}
	write := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if first != nil && !write(first) {
		return
	}
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case ev := <-c.ch:
			// An update made before the snapshot (queued while it was
			// rendered) would put older rows back: the snapshot has them.
			if ev.seq <= firstSeq {
				continue
			}
			if !write(ev.data) {
				return
			}
		case <-keepAlive.C:
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
		case <-c.gone:
			return
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
}

// encode renders what changed since version since as one event (nil when
// nothing did) and says which version it holds.
func (s *Server) encode(since uint64) ([]byte, uint64, error) {
	sn := s.st.since(since, time.Now())
	u, err := render(s.tmpl, sn)
	if err != nil || u == nil {
		return nil, sn.Ver, err
	}
	u.SentAt = time.Now().UnixMilli()
	data, err := json.Marshal(u)
	if err != nil {
		return nil, sn.Ver, err
	}
	return fmt.Appendf(nil, "id: %d\ndata: %s\n\n", u.Seq, data), sn.Ver, nil
}

// pushLoop sends changes to every browser, at most one update per
// PushEvery: the first change after a quiet spell goes at once, the ones
// that follow within PushEvery wait and go together.
func (s *Server) pushLoop(ctx context.Context) {
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.st.changed:
		}
		msg, ver, err := s.encode(sent)
		if err != nil {
			s.log.Warn("update not rendered", "err", err)
		}
		sent = ver
		s.st.forgetRemoved(sent)
		if msg != nil {
			s.broadcast(event{seq: ver, data: msg})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.PushEvery):
		}
	}
}

func (s *Server) broadcast(msg event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		select {
		case c.ch <- msg:
		default:
			delete(s.clients, c)
			close(c.gone)
		}
	}
}

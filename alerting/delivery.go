package alerting

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/schema"
)

// Delivery statuses.
const (
	DeliveryPending   = "pending"   // not yet accepted: first try due, or retrying
	DeliveryDelivered = "delivered" // the receiver accepted it
	DeliveryFailed    = "failed"    // the receiver refused it (a 4xx other than 429): not tried again
)

// Delivery is one notification to one receiver, with its tries.
type Delivery struct {
	Key          string              `json:"key"` // notification id + "/" + receiver
	Receiver     string              `json:"receiver"`
	Notification notify.Notification `json:"notification"`
	Status       string              `json:"status"`
	Attempts     int                 `json:"attempts"`
	NextAttempt  time.Time           `json:"next_attempt"`
	LastError    string              `json:"last_error,omitempty"`
	CreatedAt    time.Time           `json:"created_at"`
	DoneAt       time.Time           `json:"done_at,omitzero"`
}

// State is everything delivery keeps, as one JSON value: the coordinator
// leader stores it after each change, and the next leader starts from it.
type State struct {
	// Applied is the highest ORCH_ALERTS sequence applied (each group
	// keeps its own, so an alert delivered again is applied once).
	Applied    uint64               `json:"applied"`
	Groups     map[string]*Group    `json:"groups"`
	Deliveries map[string]*Delivery `json:"deliveries"`
	Silences   []Silence            `json:"silences,omitempty"`
}

// NewState is an empty state.
func NewState() *State {
	return &State{Groups: map[string]*Group{}, Deliveries: map[string]*Delivery{}}
}

// Retry bounds: a delivery refused for a while is tried again after 1 s,
// 2 s, 4 s ... up to 5 minutes between tries, or after the receiver's
// Retry-After when that is longer; it is tried until the receiver accepts.
const (
	RetryFirst = time.Second
	RetryMax   = 5 * time.Minute
)

// Keep bounds what the state remembers of what is over: delivered and
// failed deliveries and resolved groups, for `restartcoord alerts`.
const (
	KeepDone     = 24 * time.Hour
	KeepDoneMost = 500
)

// Engine turns alerts into deliveries under a configuration: grouping
// (Policy), routes, silences, retries. It is pure: times are arguments, and
// the caller sends what Due returns and reports back with Record.
type Engine struct {
	Config Config
	Policy Policy
}

// NewEngine is an engine for cfg (its defaults applied).
func NewEngine(cfg Config) Engine {
	cfg = cfg.WithDefaults()
	return Engine{Config: cfg, Policy: Policy{GroupWait: time.Duration(cfg.GroupWait),
		GroupInterval: time.Duration(cfg.GroupInterval), RepeatInterval: time.Duration(cfg.RepeatInterval)}}
}

// Apply adds one alert read from ORCH_ALERTS at sequence seq. It reports
// whether the state changed.
func (e Engine) Apply(st *State, a schema.Alert, seq uint64, now time.Time) bool {
	// Alerts come in stream order, except those delivered again (a leader
	// died holding them), which come after newer ones: each group applies
	// what is newer than what it has (Policy.Observe), rather than one
	// high-water mark for the stream, which would drop them.
	st.Applied = max(st.Applied, seq)
	if a.Kind == schema.AlertTest || len(e.Config.ReceiversFor(a)) == 0 {
		return true // routed nowhere: nothing to group
	}
	fp := a.Fingerprint()
	g := st.Groups[fp]
	if g == nil {
		if !a.Firing() {
			return true // the end of something never seen (or already forgotten)
		}
		g = &Group{Fingerprint: fp}
		st.Groups[fp] = g
	}
	e.Policy.Observe(g, a, seq, now)
	return true
}

// Plan creates the deliveries of every group whose notification is due
// (one per receiver its alert routes to), unless a silence holds it; then
// it returns the pending deliveries whose try is due, oldest first, one per
// receiver and group at a time (a resolution is not sent before the
// trigger it resolves).
func (e Engine) Plan(st *State, now time.Time) []*Delivery {
	fps := make([]string, 0, len(st.Groups))
	for fp := range st.Groups {
		fps = append(fps, fp)
	}
	sort.Strings(fps)
	for _, fp := range fps {
		g := st.Groups[fp]
		at, ok := e.Policy.Due(*g)
		if !ok || at.After(now) {
			continue
		}
		if _, silenced := Silenced(st.Silences, g.Alert, now); silenced && g.Alert.Firing() {
			continue // due again once the silence ends
		}
		n := notify.Notification{ID: NotificationID(*g), Fingerprint: fp, Status: statusOf(g.Alert),
			Alert: g.Alert, Count: g.Count, FirstSeen: g.FirstSeen}
		for _, r := range e.Config.ReceiversFor(g.Alert) {
			key := n.ID + "/" + r
			if _, dup := st.Deliveries[key]; !dup {
				st.Deliveries[key] = &Delivery{Key: key, Receiver: r, Notification: n, Status: DeliveryPending,
					NextAttempt: now, CreatedAt: now}
			}
		}
		e.Policy.Notified(g, now)
	}
	var due []*Delivery
	head := map[string]bool{} // receiver + group with an older delivery pending
	for _, d := range st.sorted() {
		if d.Status != DeliveryPending {
			continue
		}
		lane := d.Receiver + "\x00" + d.Notification.Fingerprint
		if head[lane] {
			continue
		}
		head[lane] = true
		if !d.NextAttempt.After(now) {
			due = append(due, d)
		}
	}
	return due
}

// Next is when Plan next has something to do (zero: nothing waits). A
// firing group held by a silence waits for the silence's end.
func (e Engine) Next(st *State, now time.Time) time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, g := range st.Groups {
		at, ok := e.Policy.Due(*g)
		if !ok {
			continue
		}
		if s, silenced := Silenced(st.Silences, g.Alert, now); silenced && g.Alert.Firing() {
			at = s.Until
		}
		earlier(at)
	}
	for _, d := range st.Deliveries {
		if d.Status == DeliveryPending {
			earlier(d.NextAttempt)
		}
	}
	return next
}

// Record notes the outcome of one try of d: delivered (err nil), to be
// tried again (a retryable error: after a growing wait, at least the
// receiver's Retry-After), or failed for good.
func (e Engine) Record(st *State, key string, err error, now time.Time) {
	d := st.Deliveries[key]
	if d == nil || d.Status != DeliveryPending {
		return
	}
	d.Attempts++
	if err == nil {
		d.Status, d.DoneAt, d.LastError = DeliveryDelivered, now, ""
		return
	}
	d.LastError = err.Error()
	retry, after := notify.RetryAfter(err)
	if !retry {
		d.Status, d.DoneAt = DeliveryFailed, now
		return
	}
	d.NextAttempt = now.Add(max(Backoff(d.Attempts), after))
}

// Backoff is the wait after the attempts-th failed try: RetryFirst doubled
// each time, at most RetryMax.
func Backoff(attempts int) time.Duration {
	w := RetryFirst
	for i := 1; i < attempts && w < RetryMax; i++ {
		w *= 2
	}
	return min(w, RetryMax)
}

// Prune forgets what is over and old: groups done, deliveries delivered or
// failed more than KeepDone ago (and the oldest beyond KeepDoneMost), and
// silences expired.
func (e Engine) Prune(st *State, now time.Time) {
	for fp, g := range st.Groups {
		if g.Done() && now.Sub(g.LastChange) > KeepDone {
			delete(st.Groups, fp)
		}
	}
	var done []*Delivery
	for k, d := range st.Deliveries {
		if d.Status == DeliveryPending {
			continue
		}
		if now.Sub(d.DoneAt) > KeepDone {
			delete(st.Deliveries, k)
			continue
		}
		done = append(done, d)
	}
	if len(done) > KeepDoneMost {
		slices.SortFunc(done, func(a, b *Delivery) int { return a.DoneAt.Compare(b.DoneAt) })
		for _, d := range done[:len(done)-KeepDoneMost] {
			delete(st.Deliveries, d.Key)
		}
	}
	st.Silences = slices.DeleteFunc(st.Silences, func(s Silence) bool { return !now.Before(s.Until) })
}

// sorted lists the deliveries oldest first (then by key).
func (st *State) sorted() []*Delivery {
	out := make([]*Delivery, 0, len(st.Deliveries))
	for _, d := range st.Deliveries {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Delivery) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

func statusOf(a schema.Alert) string {
	if a.Firing() {
		return schema.AlertStatusFiring
	}
	return schema.AlertStatusResolved
}

package alerting

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/restartcoord/restartcoord/schema"
)

var (
	policyT0   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	testPolicy = Policy{GroupWait: 30 * time.Second, GroupInterval: 5 * time.Minute, RepeatInterval: 4 * time.Hour}
)

func firingOn(node string) schema.Alert { return mkAlert(schema.AlertRestartFailed, node) }

func resolvedOn(node string) schema.Alert {
	a := firingOn(node)
	a.Status = schema.AlertStatusResolved
	return a
}

// policyStep is one event of a table test: an alert observed, or a notification
// sent, at policyT0+at.
type policyStep struct {
	at     time.Duration
	alert  *schema.Alert // nil: Notified
	ignore bool          // Observe must report no change
}

func fireAt(at time.Duration) policyStep { a := firingOn("n1"); return policyStep{at: at, alert: &a} }
func resolveAt(at time.Duration) policyStep {
	a := resolvedOn("n1")
	return policyStep{at: at, alert: &a}
}
func notifiedAt(at time.Duration) policyStep { return policyStep{at: at} }

func TestPolicy(t *testing.T) {
	const m = time.Minute
	for _, tc := range []struct {
		name     string
		steps    []policyStep
		due      time.Duration // from policyT0; -1: nothing due
		status   string
		episode  int
		count    int
		idSuffix string
	}{
		{"first firing: due after group_wait", []policyStep{fireAt(0)}, 30 * time.Second, "firing", 1, 1, "#1@1767225600/firing/1"},
		{"more firing alerts only count", []policyStep{fireAt(0), fireAt(10 * time.Second), fireAt(20 * time.Second)},
			30 * time.Second, "firing", 1, 3, "/firing/1"},
		{"notified: repeat after repeat_interval", []policyStep{fireAt(0), notifiedAt(30 * time.Second), fireAt(m)},
			30*time.Second + 4*time.Hour, "firing", 1, 2, "/firing/2"},
		{"resolved before notified: dropped", []policyStep{fireAt(0), resolveAt(10 * time.Second)}, -1, "resolved", 1, 1, ""},
		{"resolved soon after notified: waits group_interval", []policyStep{fireAt(0), notifiedAt(30 * time.Second), resolveAt(m)},
			30*time.Second + 5*m, "resolved", 1, 1, "/resolved/2"},
		{"resolved long after notified: due at once", []policyStep{fireAt(0), notifiedAt(30 * time.Second), resolveAt(time.Hour)},
			time.Hour, "resolved", 1, 1, "/resolved/2"},
		{"resolution notified: done", []policyStep{fireAt(0), notifiedAt(30 * time.Second), resolveAt(m), notifiedAt(6 * m)}, -1, "resolved", 1, 1, ""},
		{"resolved again: ignored", []policyStep{fireAt(0), resolveAt(m), {at: 2 * m, alert: ptrTo(resolvedOn("n1")), ignore: true}}, -1, "resolved", 1, 1, ""},
		{"fires again soon after its resolution was told: new episode, waits group_interval",
			[]policyStep{fireAt(0), notifiedAt(30 * time.Second), resolveAt(m), notifiedAt(6 * m), fireAt(7 * m)},
			11 * m, "firing", 2, 1, "#2@1767226020/firing/1"},
		{"fires again long after: new episode, waits group_wait",
			[]policyStep{fireAt(0), notifiedAt(30 * time.Second), resolveAt(m), notifiedAt(6 * m), fireAt(time.Hour)},
			time.Hour + 30*time.Second, "firing", 2, 1, "#2@1767229200/firing/1"},
		{"fires again after a dropped episode: new episode", []policyStep{fireAt(0), resolveAt(10 * time.Second), fireAt(20 * time.Second)},
			50 * time.Second, "firing", 2, 1, "#2@1767225620/firing/1"},
		{"fires again before its resolution was told: the episode goes on",
			[]policyStep{fireAt(0), notifiedAt(30 * time.Second), resolveAt(m), fireAt(2 * m)}, 30*time.Second + 4*time.Hour, "firing", 1, 2, "#1@1767225600/firing/2"},
		{"resolved for an unknown group: ignored", []policyStep{{at: 0, alert: ptrTo(resolvedOn("n1")), ignore: true}}, -1, "", 0, 0, ""},
		{"notified when nothing is due: nothing changes", []policyStep{notifiedAt(0)}, -1, "", 0, 0, ""},
		{"another fingerprint: ignored", []policyStep{fireAt(0), {at: m, alert: ptrTo(firingOn("n2")), ignore: true}}, 30 * time.Second, "firing", 1, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g Group
			for i, s := range tc.steps {
				now := policyT0.Add(s.at)
				if s.alert == nil {
					testPolicy.Notified(&g, now)
					continue
				}
				if changed := testPolicy.Observe(&g, *s.alert, uint64(i+1), now); changed == s.ignore {
					t.Fatalf("step %d: Observe changed %v, want %v", i, changed, !s.ignore)
				}
			}
			at, ok := testPolicy.Due(g)
			switch {
			case tc.due < 0 && ok:
				t.Errorf("Due: got %v, want nothing due", at.Sub(policyT0))
			case tc.due >= 0 && (!ok || !at.Equal(policyT0.Add(tc.due))):
				t.Errorf("Due: got %v %v, want %v", at.Sub(policyT0), ok, tc.due)
			}
			if got, want := g.Done(), tc.due < 0; got != want {
				t.Errorf("Done: got %v, want %v", got, want)
			}
			if g.Status != tc.status || g.Episode != tc.episode || g.Count != tc.count {
				t.Errorf("got status %q episode %d count %d, want %q %d %d", g.Status, g.Episode, g.Count, tc.status, tc.episode, tc.count)
			}
			if id := NotificationID(g); tc.idSuffix != "" && !strings.HasSuffix(id, tc.idSuffix) {
				t.Errorf("NotificationID: got %q, want it to end %q", id, tc.idSuffix)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestPolicyReplayAndSeq(t *testing.T) {
	var g Group
	if !testPolicy.Observe(&g, firingOn("n1"), 5, policyT0) {
		t.Fatal("Observe seq 5: got no change")
	}
	before := g
	for _, seq := range []uint64{5, 3} {
		if testPolicy.Observe(&g, firingOn("n1"), seq, policyT0.Add(time.Second)) || !reflect.DeepEqual(g, before) {
			t.Errorf("Observe replayed seq %d: got a change, want none", seq)
		}
	}
	if !testPolicy.Observe(&g, firingOn("n1"), 0, policyT0.Add(time.Second)) || g.Count != 2 || g.Seq != 5 {
		t.Errorf("Observe seq 0: got count %d seq %d, want applied (2) and seq kept (5)", g.Count, g.Seq)
	}
}

func TestNotificationIDStable(t *testing.T) {
	var g Group
	testPolicy.Observe(&g, firingOn("n1"), 1, policyT0)
	id := NotificationID(g)
	testPolicy.Observe(&g, firingOn("n1"), 2, policyT0.Add(time.Second))
	if again := NotificationID(g); again != id {
		t.Errorf("NotificationID before Notified: got %q then %q, want the same", id, again)
	}
	if got, want := id, "restart_failed/node/n1#1@1767225600/firing/1"; got != want {
		t.Errorf("NotificationID: got %q, want %q", got, want)
	}
	testPolicy.Notified(&g, policyT0.Add(30*time.Second))
	if next := NotificationID(g); next == id {
		t.Errorf("NotificationID after Notified: got %q again, want the next", next)
	}
	var odd Group
	roll := schema.Alert{Kind: schema.AlertRollPaused, Severity: schema.SeverityWarning, RollID: "r 1\n\x00"}
	testPolicy.Observe(&odd, roll, 1, policyT0)
	if got, want := NotificationID(odd), "roll_paused/roll/r_1__#1@1767225600/firing/1"; got != want {
		t.Errorf("NotificationID of a roll id with spaces: got %q, want %q", got, want)
	}
}

// The property tests run random sequences of alerts for a few fingerprints
// through an ideal planner that sends every notification exactly when due.

type simOp int

const (
	opFire simOp = iota
	opResolve
	opReplay
)

type simAction struct {
	op   simOp
	node int           // which fingerprint
	dt   time.Duration // clock step before the action
	pick int           // opReplay: which applied alert
}

type simNote struct {
	fp, id, status string
	at             time.Time
	episode        int
	first          bool // the first notification of its episode
}

type simApplied struct {
	seq uint64
	a   schema.Alert
}

var simNodes = []string{"n0", "n1", "n2"}

func genSimPolicy(t *rapid.T) Policy {
	s := func(lo, hi int64, label string) time.Duration {
		return time.Duration(rapid.Int64Range(lo, hi).Draw(t, label)) * time.Second
	}
	gi := s(1, 600, "group_interval")
	return Policy{GroupWait: s(0, 120, "group_wait"), GroupInterval: gi, RepeatInterval: gi + s(0, 7200, "repeat_extra")}
}

// genSimAction makes actions whose clock steps are on p's scale, so that
// a group repeats a few times per step, not thousands.
func genSimAction(p Policy) *rapid.Generator[simAction] {
	return rapid.Custom(func(t *rapid.T) simAction {
		unit := rapid.SampledFrom([]time.Duration{time.Second, p.GroupWait, p.GroupInterval, p.RepeatInterval}).Draw(t, "unit")
		return simAction{
			op:   rapid.SampledFrom([]simOp{opFire, opFire, opResolve, opResolve, opReplay}).Draw(t, "op"),
			node: rapid.IntRange(0, len(simNodes)-1).Draw(t, "node"),
			dt:   time.Duration(rapid.Int64Range(0, 4).Draw(t, "steps")) * unit,
			pick: rapid.IntRange(0, 1<<20).Draw(t, "pick"),
		}
	})
}

// simulatePolicy runs acts under p, round-tripping the state through JSON before
// action roundTripAt (-1: never), checks the invariants as it goes, and
// returns the notifications sent.
func simulatePolicy(t *rapid.T, p Policy, acts []simAction, roundTripAt int) []simNote {
	groups := map[string]*Group{}
	now := policyT0
	var seq uint64
	var history []simApplied
	var log []simNote
	last := map[string]simNote{}
	flush := func(until time.Time) {
		for {
			var fp string
			var at time.Time
			for k, g := range groups {
				if d, ok := p.Due(*g); ok && (fp == "" || d.Before(at) || d.Equal(at) && k < fp) {
					fp, at = k, d
				}
			}
			if fp == "" || at.After(until) {
				return
			}
			if at.Before(now) {
				t.Fatalf("%s: due %v, before the last event %v", fp, at.Sub(policyT0), now.Sub(policyT0))
			}
			now = at
			g := groups[fp]
			n := simNote{fp: fp, id: NotificationID(*g), status: g.Status, at: at, episode: g.Episode, first: g.Notifications == 0}
			checkSimNote(t, p, *g, n, last)
			p.Notified(g, at)
			last[fp] = n
			log = append(log, n)
		}
	}
	for i, a := range acts {
		if i == roundTripAt {
			groups = roundTripGroups(t, groups)
		}
		target := now.Add(a.dt)
		flush(target)
		now = target
		switch a.op {
		case opFire, opResolve:
			al := firingOn(simNodes[a.node])
			if a.op == opResolve {
				al = resolvedOn(simNodes[a.node])
			}
			seq++
			fp := al.Fingerprint()
			if groups[fp] == nil {
				groups[fp] = &Group{}
			}
			g := groups[fp]
			before := *g
			if changed := p.Observe(g, al, seq, now); changed != !reflect.DeepEqual(before, *g) {
				t.Fatalf("Observe reported changed=%v, but the group went from %+v to %+v", changed, before, *g)
			}
			history = append(history, simApplied{seq, al})
		case opReplay:
			if len(history) == 0 {
				continue
			}
			h := history[a.pick%len(history)]
			g := groups[h.a.Fingerprint()]
			before := *g
			if p.Observe(g, h.a, h.seq, now) || !reflect.DeepEqual(before, *g) {
				t.Fatalf("replaying seq %d changed the group from %+v to %+v", h.seq, before, *g)
			}
		}
		checkSimGroups(t, p, groups)
	}
	flush(now.Add(p.GroupWait + p.RepeatInterval + p.GroupInterval))
	return log
}

// checkSimNote checks a notification n of g about to be sent, last being the
// previous notification of each fingerprint.
func checkSimNote(t *rapid.T, p Policy, g Group, n simNote, last map[string]simNote) {
	prev, had := last[n.fp]
	if had && n.at.Sub(prev.at) < p.GroupInterval {
		t.Fatalf("%s: notified at %v and again at %v: closer than group_interval %v", n.fp, prev.at.Sub(policyT0), n.at.Sub(policyT0), p.GroupInterval)
	}
	switch {
	case n.status == schema.AlertStatusResolved:
		if !had || prev.status != schema.AlertStatusFiring || prev.episode != n.episode {
			t.Fatalf("%s: resolution of episode %d notified, but its firing was not (last: %+v)", n.fp, n.episode, prev)
		}
	case n.first:
		if n.at.Before(g.FirstSeen.Add(p.GroupWait)) || n.at.After(g.FirstSeen.Add(max(p.GroupWait, p.GroupInterval))) {
			t.Fatalf("%s: first notification %v after the first alert, want within [group_wait %v, max(group_wait, group_interval)]",
				n.fp, n.at.Sub(g.FirstSeen), p.GroupWait)
		}
	default:
		if !had || prev.status != schema.AlertStatusFiring || prev.episode != n.episode || !n.at.Equal(prev.at.Add(p.RepeatInterval)) {
			t.Fatalf("%s: repeat at %v, want repeat_interval %v after the firing notification %+v", n.fp, n.at.Sub(policyT0), p.RepeatInterval, prev)
		}
	}
}

// checkSimGroups checks every group between events: a group is Done exactly
// when nothing is due, and a firingOn group always has a notification due.
func checkSimGroups(t *rapid.T, p Policy, groups map[string]*Group) {
	for fp, g := range groups {
		_, ok := p.Due(*g)
		if g.Done() == ok {
			t.Fatalf("%s: Done %v but due %v: %+v", fp, g.Done(), ok, *g)
		}
		if g.Status == schema.AlertStatusFiring && !ok {
			t.Fatalf("%s: firing with nothing due: %+v", fp, *g)
		}
	}
}

func roundTripGroups(t *rapid.T, groups map[string]*Group) map[string]*Group {
	b, err := json.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*Group{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPolicyProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := genSimPolicy(t)
		acts := rapid.SliceOfN(genSimAction(p), 20, 100).Draw(t, "actions")
		straight := simulatePolicy(t, p, acts, -1)
		at := rapid.IntRange(0, len(acts)-1).Draw(t, "round trip before action")
		resumed := simulatePolicy(t, p, acts, at)
		if len(straight) != len(resumed) {
			t.Fatalf("after a JSON round trip: %d notifications, want %d", len(resumed), len(straight))
		}
		for i := range straight {
			s, r := straight[i], resumed[i]
			if s.id != r.id || s.status != r.status || !s.at.Equal(r.at) {
				t.Fatalf("notification %d after a JSON round trip: got %+v, want %+v", i, r, s)
			}
		}
	})
}

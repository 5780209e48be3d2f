package alerting

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/restartcoord/restartcoord/schema"
)

// Policy is the grouping policy, Alertmanager's with one group per
// fingerprint (kind and node or roll): a pure value, times are arguments.
//
//   - A firing alert for a group not firing opens an episode; its first
//     notification is due GroupWait after, and at least GroupInterval after
//     the group's previous notification (of an earlier episode).
//   - More firing alerts only count; while firing, the notification is
//     repeated RepeatInterval after the last one.
//   - A resolved alert ends the episode: if its firing was notified, the
//     resolution is due at once, but at least GroupInterval after the last
//     notification; if not, the group is dropped silently.
//   - Firing again before that resolution was notified continues the
//     episode (the receivers still see it firing): nothing is sent until
//     the repeat is due.
//   - A resolved alert for a group not firing is ignored.
//
// So two notifications of one group are never closer than GroupInterval.
type Policy struct {
	GroupWait      time.Duration
	GroupInterval  time.Duration
	RepeatInterval time.Duration // used as at least GroupInterval
}

// Policy is the grouping policy of c (its intervals; zero ones take their
// defaults).
func (c Config) Policy() Policy {
	c = c.WithDefaults()
	return Policy{GroupWait: time.Duration(c.GroupWait), GroupInterval: time.Duration(c.GroupInterval),
		RepeatInterval: time.Duration(c.RepeatInterval)}
}

// Group is what the policy keeps of one condition (fingerprint). It is
// persisted as JSON, so that the next coordinator leader goes on from it.
type Group struct {
	Fingerprint string `json:"fingerprint"`
	// Status is the condition's: firing or resolved ("" before any alert).
	Status string `json:"status,omitempty"`
	// Alert is the newest alert applied (the resolved one, once resolved):
	// what a notification tells.
	Alert schema.Alert `json:"alert"`
	// Count is the number of firing alerts of the episode.
	Count int `json:"count"`
	// FirstSeen is when the episode opened, LastChange when Status last
	// changed (both the times given to Observe).
	FirstSeen  time.Time `json:"first_seen"`
	LastChange time.Time `json:"last_change"`
	// LastNotified is when the last notification was sent, of this episode
	// or an earlier one (zero: never).
	LastNotified time.Time `json:"last_notified,omitzero"`
	// NotifiedStatus is the status the last notification of the episode
	// told ("" while none was sent).
	NotifiedStatus string `json:"notified_status,omitempty"`
	// Notifications counts the notifications of the episode.
	Notifications int `json:"notifications,omitempty"`
	// Episode numbers the episodes (firing until resolved) of the group,
	// from 1.
	Episode int `json:"episode"`
	// Seq is the stream sequence of the last alert applied (0: none given).
	Seq uint64 `json:"seq,omitempty"`
}

// Observe applies alert a, read at stream sequence seq, at time now, to g
// (a new group is the zero Group, or one with only its Fingerprint). It
// reports whether g changed. It ignores, changing nothing: an alert whose
// seq is not above g.Seq (a replay; seq 0 means no sequence and is always
// applied), an alert of another fingerprint, and a resolved alert for a
// group not firing.
func (p Policy) Observe(g *Group, a schema.Alert, seq uint64, now time.Time) (changed bool) {
	fp := a.Fingerprint()
	if seq != 0 && seq <= g.Seq || g.Fingerprint != "" && g.Fingerprint != fp {
		return false
	}
	switch {
	case !a.Firing():
		if g.Status != schema.AlertStatusFiring {
			return false
		}
		g.Status, g.Alert, g.LastChange = schema.AlertStatusResolved, a, now
	case g.Status == schema.AlertStatusFiring:
		g.Alert = a
		g.Count++
	case g.Status == schema.AlertStatusResolved && g.NotifiedStatus == schema.AlertStatusFiring:
		// Back before its resolution was told: the same episode goes on.
		g.Status, g.Alert, g.LastChange = schema.AlertStatusFiring, a, now
		g.Count++
	default: // a new episode
		g.Episode++
		g.Status, g.Alert, g.Count = schema.AlertStatusFiring, a, 1
		g.FirstSeen, g.LastChange = now, now
		g.NotifiedStatus, g.Notifications = "", 0
	}
	g.Fingerprint = fp
	if seq != 0 {
		g.Seq = seq
	}
	return true
}

// Due is when the next notification of g is due (perhaps already past), and
// false when none will be unless an alert comes: g is Done.
func (p Policy) Due(g Group) (at time.Time, ok bool) {
	switch {
	case g.Status == schema.AlertStatusFiring && g.NotifiedStatus == "":
		at = g.FirstSeen.Add(p.GroupWait)
		if !g.LastNotified.IsZero() {
			at = latest(at, g.LastNotified.Add(p.GroupInterval))
		}
		return at, true
	case g.Status == schema.AlertStatusFiring:
		return g.LastNotified.Add(max(p.RepeatInterval, p.GroupInterval)), true
	case g.Status == schema.AlertStatusResolved && g.NotifiedStatus == schema.AlertStatusFiring:
		return latest(g.LastChange, g.LastNotified.Add(p.GroupInterval)), true
	}
	return time.Time{}, false
}

// Notified records that the notification of g's current status was sent at
// now (call it once the notification is handed over for delivery, whether
// or not it was due). It does nothing for a Done group.
func (p Policy) Notified(g *Group, now time.Time) {
	if g.Done() {
		return
	}
	g.NotifiedStatus, g.LastNotified = g.Status, now
	g.Notifications++
}

// Done reports whether g has nothing more to tell: resolved and its
// resolution notified, or resolved before its firing was notified
// (dropped), or never fired. A Done group can be forgotten.
func (g Group) Done() bool {
	return g.Status != schema.AlertStatusFiring && g.NotifiedStatus != schema.AlertStatusFiring
}

// NotificationID names the notification of g due next: its fingerprint,
// episode (number and start, in Unix seconds, so that it stays unique after
// a Done group is forgotten and its fingerprint fires again), status and
// number within the episode, as in
// "restart_failed/node/n1#2@1767225600/firing/3". It is the same until
// Notified is called, so a retry of one notification carries the same id.
// White space and unprintable characters (from a node or roll id) are
// written '_', so that the id can be a header value (webhook-id).
func NotificationID(g Group) string {
	id := fmt.Sprintf("%s#%d@%d/%s/%d", g.Fingerprint, g.Episode, g.FirstSeen.Unix(), g.Status, g.Notifications+1)
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, id)
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

package alerting

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/restartcoord/restartcoord/schema"
)

// Silence holds back the notifications of one alert kind, on one node or
// every node, until a time. The engine holds back only firing
// notifications: a resolution is always told. Silences are kept in the
// delivery state (JSON).
type Silence struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`              // an alert kind (schema.AlertKinds)
	NodeID    string    `json:"node_id,omitempty"` // empty: every node, and alerts about no node
	Until     time.Time `json:"until"`
	Reason    string    `json:"reason"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Validate checks a silence being created at now and returns every problem,
// joined: an ID of 1..64 characters, a known kind other than test (test
// alerts are never published), a valid node id if one is given (as
// schema.ValidToken), Until after now and at most schema.MaxSilence after
// it, a reason of 1..schema.MaxSilenceReason characters that is not only
// white space.
func (s Silence) Validate(now time.Time) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("silence: "+format, args...)) }
	if s.ID == "" || utf8.RuneCountInString(s.ID) > 64 {
		bad("id must be 1..64 characters")
	}
	if _, ok := schema.AlertKinds[s.Kind]; !ok {
		bad("no alert kind %q", s.Kind)
	} else if s.Kind == schema.AlertTest {
		bad("kind %s cannot be silenced: test alerts are never published", s.Kind)
	}
	if s.NodeID != "" && !schema.ValidToken(s.NodeID) {
		bad("node id must be 1..64 letters, digits, '-' or '_', got %q", s.NodeID)
	}
	switch {
	case !s.Until.After(now):
		bad("until (%s) must be after now (%s)", s.Until.Format(time.RFC3339), now.Format(time.RFC3339))
	case s.Until.Sub(now) > schema.MaxSilence:
		bad("until (%s) must be at most %v from now", s.Until.Format(time.RFC3339), schema.MaxSilence)
	}
	if n := utf8.RuneCountInString(s.Reason); strings.TrimSpace(s.Reason) == "" || n > schema.MaxSilenceReason {
		bad("reason must be 1..%d characters (not only spaces), got %d", schema.MaxSilenceReason, n)
	}
	return errors.Join(errs...)
}

// Matches reports whether s holds back alert a at now: same kind, same node
// (or s names none), and now before Until.
func (s Silence) Matches(a schema.Alert, now time.Time) bool {
	return now.Before(s.Until) && a.Kind == s.Kind && (s.NodeID == "" || s.NodeID == a.NodeID)
}

// Silenced returns the silence that holds back a at now, if any: of those
// that match, the one lasting longest (the first of them on a tie).
func Silenced(silences []Silence, a schema.Alert, now time.Time) (Silence, bool) {
	var found Silence
	ok := false
	for _, s := range silences {
		if s.Matches(a, now) && (!ok || s.Until.After(found.Until)) {
			found, ok = s, true
		}
	}
	return found, ok
}

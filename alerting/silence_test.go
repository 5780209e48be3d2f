package alerting

import (
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

func validSilence(now time.Time) Silence {
	return Silence{ID: "sil-1", Kind: schema.AlertRestartFailed, NodeID: "node-1", Until: now.Add(time.Hour),
		Reason: "replacing the disk", CreatedBy: "ops", CreatedAt: now}
}

func TestSilenceValidate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		edit func(*Silence)
		want []string // substrings of the error; none: valid
	}{
		{"valid", func(*Silence) {}, nil},
		{"every node", func(s *Silence) { s.NodeID = "" }, nil},
		{"longest", func(s *Silence) { s.Until = now.Add(schema.MaxSilence) }, nil},
		{"reason of 512 characters", func(s *Silence) { s.Reason = strings.Repeat("é", schema.MaxSilenceReason) }, nil},
		{"no id", func(s *Silence) { s.ID = "" }, []string{"id must be 1..64 characters"}},
		{"unknown kind", func(s *Silence) { s.Kind = "disk_full" }, []string{`no alert kind "disk_full"`}},
		{"test kind", func(s *Silence) { s.Kind = schema.AlertTest }, []string{"kind test cannot be silenced"}},
		{"bad node id", func(s *Silence) { s.NodeID = "node 1" }, []string{`node id must be 1..64 letters`}},
		{"until now", func(s *Silence) { s.Until = now }, []string{"must be after now"}},
		{"until past", func(s *Silence) { s.Until = now.Add(-time.Second) }, []string{"must be after now"}},
		{"too long", func(s *Silence) { s.Until = now.Add(schema.MaxSilence + time.Second) }, []string{"must be at most 720h0m0s from now"}},
		{"no reason", func(s *Silence) { s.Reason = "" }, []string{"reason must be 1..512 characters"}},
		{"blank reason", func(s *Silence) { s.Reason = "  \t" }, []string{"reason must be 1..512 characters"}},
		{"reason too long", func(s *Silence) { s.Reason = strings.Repeat("x", schema.MaxSilenceReason+1) }, []string{"got 513"}},
		{"every problem at once", func(s *Silence) { *s = Silence{Kind: "x"} },
			[]string{"id must", "no alert kind", "must be after now", "reason must"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSilence(now)
			tc.edit(&s)
			err := s.Validate(now)
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate: got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: got nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: got %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestSilenceMatches(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	node1 := validSilence(now)
	every := validSilence(now)
	every.NodeID = ""
	for _, tc := range []struct {
		name string
		s    Silence
		a    schema.Alert
		at   time.Time
		want bool
	}{
		{"same kind and node", node1, mkAlert(schema.AlertRestartFailed, "node-1"), now, true},
		{"resolved alerts too", node1, func() schema.Alert {
			a := mkAlert(schema.AlertRestartFailed, "node-1")
			a.Status = schema.AlertStatusResolved
			return a
		}(), now, true},
		{"another node", node1, mkAlert(schema.AlertRestartFailed, "node-2"), now, false},
		{"no node", node1, mkAlert(schema.AlertRestartFailed, ""), now, false},
		{"another kind", node1, mkAlert(schema.AlertSlowRestart, "node-1"), now, false},
		{"every node: any node", every, mkAlert(schema.AlertRestartFailed, "node-9"), now, true},
		{"every node: no node", every, mkAlert(schema.AlertRestartFailed, ""), now, true},
		{"just before until", node1, mkAlert(schema.AlertRestartFailed, "node-1"), node1.Until.Add(-time.Nanosecond), true},
		{"at until: expired", node1, mkAlert(schema.AlertRestartFailed, "node-1"), node1.Until, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Matches(tc.a, tc.at); got != tc.want {
				t.Errorf("Matches: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSilenced(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	short := validSilence(now)
	short.ID, short.Until = "short", now.Add(time.Minute)
	long := validSilence(now)
	long.ID, long.NodeID, long.Until = "long", "", now.Add(time.Hour)
	other := validSilence(now)
	other.ID, other.Kind, other.Until = "other", schema.AlertSlowRestart, now.Add(2*time.Hour)
	silences := []Silence{short, other, long}
	a := mkAlert(schema.AlertRestartFailed, "node-1")
	for _, tc := range []struct {
		name   string
		at     time.Time
		wantID string
	}{
		{"the longest of those matching", now, "long"},
		{"the one left", now.Add(30 * time.Minute), "long"},
		{"none left", now.Add(time.Hour), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := Silenced(silences, a, tc.at)
			if ok != (tc.wantID != "") || s.ID != tc.wantID {
				t.Errorf("Silenced: got %q %v, want %q", s.ID, ok, tc.wantID)
			}
		})
	}
	if _, ok := Silenced(nil, a, now); ok {
		t.Errorf("Silenced(nil): got silenced, want not")
	}
}

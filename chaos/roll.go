package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// The harness keeps a roll of every node going for the whole run: a new one
// RollEvery after the last one ended, one at a time. It names each roll
// itself (roll_id), so a start whose answer is lost (a leader election
// holds a start up to 15 s) is found later by its id rather than lost or
// made twice, and it aborts a roll that stays paused too long, as an
// operator would, so one stuck pause cannot end the run's rolling.

// RollBudget is the max_unavailable of the harness's rolls.
const RollBudget = 1

const (
	// rollPauseLimit: a roll paused longer than this is aborted by the
	// harness. The coordinator resumes a roll paused for a failed node by
	// itself once the node is healthy again; a pause it does not resume
	// (an exhausted resume budget, a quarantine, the breaker) waits for
	// an operator, which here is the harness.
	rollPauseLimit = 60 * time.Second
	// rollStartTimeout is longer than a coordinator holds a start while no
	// leader answers (15 s, then NOT_LEADER) plus its last forward, so a
	// start is normally answered, by a roll or a refusal.
	rollStartTimeout = 20 * time.Second
	// rollRetry: a refused start (a node down under a fault, no leader) is
	// tried again this soon.
	rollRetry = 2 * time.Second
	// rollLostAfter: a start left unanswered whose roll.status still says
	// NOT_FOUND this long after is taken as never made. It is kept and
	// asked about again at the end, in case it was made after all.
	rollLostAfter = 10 * time.Second
	// rollPoll: how often the harness reads its current roll's status.
	rollPoll = time.Second
	// rollsEndWithin: at the end of the run, how long the rolls under way
	// get to end before the rest are aborted.
	rollsEndWithin = 90 * time.Second
)

// rollTrack is what the harness knows of one roll it asked for.
type rollTrack struct {
	id    string
	maybe bool      // its start went unanswered: not known to exist yet
	asked time.Time // when the unanswered start was given up on

	state       string
	paused      bool      // paused when last seen
	pausedSeen  time.Time // when the harness first saw the current pause
	pauses      int       // pauses the harness saw
	resumesSeen int       // paused, then running again: the harness never resumes, so automatic
	autoResumes int       // the coordinator's count (auto_resumes)
	abortAsked  bool      // the harness aborted it (paused too long, or still going at the end)
}

// note records a status of the roll seen at now.
func (t *rollTrack) note(st schema.RollStatus, now time.Time) {
	t.state = st.State
	t.autoResumes = max(t.autoResumes, st.AutoResumes)
	switch {
	case st.State == schema.RollPaused && !t.paused:
		t.paused, t.pausedSeen = true, now
		t.pauses++
	case st.State == schema.RollPaused:
	case t.paused && st.State == schema.RollRunning:
		t.paused = false
		t.resumesSeen++
	default:
		t.paused = false
	}
}

func (t *rollTrack) everPaused() bool { return t.pauses > 0 || t.autoResumes > 0 }

// resumed is how often the roll resumed by itself: the coordinator's count,
// or what the harness saw if it saw more (a status from before the count).
func (t *rollTrack) resumed() int { return max(t.autoResumes, t.resumesSeen) }

func rollEnded(state string) bool {
	return state == schema.RollCompleted || state == schema.RollFailed || state == schema.RollAborted
}

// pausedTooLong decides whether the harness aborts a roll: it has been
// paused for more than limit, counted from the coordinator's paused_since,
// or, in a status without it, from when the harness first saw the pause.
func pausedTooLong(st schema.RollStatus, firstSeen, now time.Time, limit time.Duration) bool {
	if st.State != schema.RollPaused {
		return false
	}
	since := firstSeen
	if st.PausedSince != nil {
		since = *st.PausedSince
	}
	return !since.IsZero() && now.Sub(since) > limit
}

// rollBook is the harness's record of its rolls and its decisions about
// them: no I/O, time given, so the roller's policy is tested without a
// cluster (roll_test.go).
type rollBook struct {
	every, pauseLimit time.Duration
	tag               string // makes roll ids unique to the run (a kept CHAOS_DIR keeps old rolls)
	n                 int    // roll ids handed out

	rolls      []*rollTrack // rolls known to have started, in order
	current    *rollTrack   // the roll the harness waits on; nil: none
	lastEnd    time.Time    // when the last roll ended (the run's start before the first)
	retryAt    time.Time    // no start before this (after a refusal)
	refuse     map[string]int
	unanswered int      // starts with no answer
	lost       []string // of those, the ones not found afterwards
}

func newRollBook(every time.Duration, now time.Time) *rollBook {
	return &rollBook{every: every, pauseLimit: rollPauseLimit, tag: strconv.FormatInt(now.Unix(), 36),
		lastEnd: now, refuse: map[string]int{}}
}

// due reports whether a new roll should start now: none is under way (or
// possibly under way), the last ended at least every ago, and no refusal
// asks to wait.
func (b *rollBook) due(now time.Time) bool {
	return b.current == nil && !now.Before(b.lastEnd.Add(b.every)) && !now.Before(b.retryAt)
}

// nextID names the next roll.
func (b *rollBook) nextID() string {
	b.n++
	return fmt.Sprintf("chaos-%s-%d", b.tag, b.n)
}

// startAnswered records how the start of roll id was answered at now: a
// roll (it is the current one), a refusal (counted by code, tried again
// soon), or nothing (it may have been made: the current one, unconfirmed).
func (b *rollBook) startAnswered(id string, st schema.RollStatus, err error, now time.Time) {
	var se *schema.Error
	switch {
	case err == nil:
		t := &rollTrack{id: id}
		t.note(st, now)
		b.rolls = append(b.rolls, t)
		b.current = t
		if rollEnded(st.State) { // possible only for a repeated id, never here; kept honest
			b.current, b.lastEnd = nil, now
		}
	case errors.As(err, &se):
		b.refuse[string(se.Code)]++
		b.retryAt = now.Add(rollRetry)
	case errors.Is(err, bus.ErrNoResponders):
		// Nobody received it: certainly not made.
		b.refuse["NO_RESPONDERS"]++
		b.retryAt = now.Add(rollRetry)
	default:
		b.unanswered++
		b.current = &rollTrack{id: id, maybe: true, asked: now}
	}
}

// statusSeen records the answer to roll.status for the current roll at now,
// and says whether the harness should abort it.
func (b *rollBook) statusSeen(st schema.RollStatus, err error, now time.Time) (abort bool) {
	t := b.current
	if t == nil {
		return false
	}
	if err != nil {
		var se *schema.Error
		if t.maybe && errors.As(err, &se) && se.Code == schema.CodeNotFound && now.Sub(t.asked) >= rollLostAfter {
			b.lost = append(b.lost, t.id)
			b.current = nil // start another as soon as the interval allows
		}
		return false // other errors: ask again
	}
	if t.maybe {
		t.maybe = false
		b.rolls = append(b.rolls, t)
	}
	t.note(st, now)
	if rollEnded(st.State) {
		b.current, b.lastEnd = nil, now
		return false
	}
	return !t.abortAsked && pausedTooLong(st, t.pausedSeen, now, b.pauseLimit)
}

// adopt makes a lost start found after all (its status st) a started roll;
// it becomes the current one if it is still under way and none is.
func (b *rollBook) adopt(id string, st schema.RollStatus, now time.Time) {
	t := &rollTrack{id: id}
	t.note(st, now)
	b.rolls = append(b.rolls, t)
	for i, l := range b.lost {
		if l == id {
			b.lost = append(b.lost[:i], b.lost[i+1:]...)
			break
		}
	}
	if !rollEnded(st.State) && b.current == nil {
		b.current = t
	}
}

// started lists the ids of the rolls known to have started.
func (b *rollBook) started() []string {
	out := make([]string, len(b.rolls))
	for i, t := range b.rolls {
		out[i] = t.id
	}
	return out
}

// counts are the rolls completed, ever paused, resumed by the coordinator
// (each automatic resume counted) and aborted by the harness.
func (b *rollBook) counts() (completed, paused, resumed, aborted int) {
	for _, t := range b.rolls {
		if t.state == schema.RollCompleted {
			completed++
		}
		if t.everPaused() {
			paused++
		}
		resumed += t.resumed()
		if t.abortAsked && t.state == schema.RollAborted {
			aborted++
		}
	}
	return
}

// roller drives a rollBook against the cluster.
type roller struct {
	c       *Cluster
	logf    func(format string, args ...any)
	mu      sync.Mutex
	book    *rollBook
	closing bool // no new rolls: the run is ending
	cancel  context.CancelFunc
	done    chan struct{}
}

func (c *Cluster) startRoller(ctx context.Context, every time.Duration, logf func(string, ...any)) *roller {
	ctx, cancel := context.WithCancel(ctx)
	r := &roller{c: c, logf: logf, book: newRollBook(every, time.Now()), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(rollPoll):
			}
			r.step(ctx)
		}
	}()
	return r
}

// step watches the current roll, or starts one when one is due.
func (r *roller) step(ctx context.Context) {
	r.mu.Lock()
	cur, due := r.book.current, !r.closing && r.book.due(time.Now())
	r.mu.Unlock()
	if cur != nil {
		st, err := r.c.rollStatus(ctx, cur.id)
		r.mu.Lock()
		was := cur.state
		abort := r.book.statusSeen(st, err, time.Now())
		is, lost := cur.state, cur.maybe && r.book.current == nil
		r.mu.Unlock()
		switch {
		case lost:
			r.logf("roll %s: its unanswered start made no roll (%v)", cur.id, err)
		case is != was:
			r.logf("roll %s: %s, %d/%d done %s %s", cur.id, is, st.Done, st.Total, st.PausedReason, st.Message)
		}
		if abort {
			r.abort(ctx, cur, st)
		}
		return
	}
	if !due {
		return
	}
	// A roll the harness does not know of runs: a start it took for never
	// made was made after all. Find it rather than start a second.
	if h, err := r.c.ClusterHealth(ctx); err != nil || h.ActiveRolls > 0 {
		if err == nil {
			r.adoptLost(ctx)
		}
		r.mu.Lock()
		r.book.retryAt = time.Now().Add(rollRetry)
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	id := r.book.nextID()
	r.mu.Unlock()
	req := schema.DefaultRollRequest()
	req.Selector = schema.Selector{Group: "default"}
	req.MaxUnavailable, req.MinHealthyTime, req.HealthyDeadline = RollBudget, 1, 30
	req.RollID = id
	cctx, cancel := context.WithTimeout(ctx, rollStartTimeout)
	var st schema.RollStatus
	err := r.c.obs().RequestJSON(cctx, schema.ClusterSubject(schema.OpRollStart), req, nil, &st)
	cancel()
	if ctx.Err() != nil {
		err = ctx.Err() // the run is ending: the start may have been made, ask later
	}
	r.mu.Lock()
	r.book.startAnswered(id, st, err, time.Now())
	r.mu.Unlock()
	r.logf("roll %s: start: %v", id, errOr(err, "started"))
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// abort aborts roll t, paused too long.
func (r *roller) abort(ctx context.Context, t *rollTrack, st schema.RollStatus) {
	since := "?"
	if st.PausedSince != nil {
		since = st.PausedSince.Format(time.TimeOnly)
	}
	err := r.c.abortRoll(ctx, t.id)
	r.logf("roll %s: paused (%s) since %s, aborted by the harness: %v", t.id, st.PausedReason, since, errOr(err, "ok"))
	if err == nil {
		r.mu.Lock()
		t.abortAsked = true
		r.mu.Unlock()
	}
}

// adoptLost asks again about the starts taken for never made.
func (r *roller) adoptLost(ctx context.Context) {
	r.mu.Lock()
	lost := append([]string(nil), r.book.lost...)
	r.mu.Unlock()
	for _, id := range lost {
		if st, err := r.c.rollStatus(ctx, id); err == nil {
			r.mu.Lock()
			r.book.adopt(id, st, time.Now())
			r.mu.Unlock()
			r.logf("roll %s: found after all (%s)", id, st.State)
		}
	}
}

// stop starts no more rolls, gives the one under way up to within to end
// (still aborting it if it stays paused too long), stops, and asks once more
// about any start left unanswered; it returns the harness's record.
func (r *roller) stop(ctx context.Context, within time.Duration) *rollBook {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	poll(ctx, within, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.book.current == nil
	})
	r.cancel()
	<-r.done
	r.mu.Lock()
	if t := r.book.current; t != nil && t.maybe {
		r.book.lost = append(r.book.lost, t.id)
		r.book.current = nil
	}
	r.mu.Unlock()
	r.adoptLost(ctx)
	return r.book
}

func (c *Cluster) rollStatus(ctx context.Context, id string) (schema.RollStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st schema.RollStatus
	err := c.obs().RequestJSON(cctx, schema.ClusterSubject(schema.OpRollStatus), schema.RollIDRequest{RollID: id}, nil, &st)
	return st, err
}

// abortRoll aborts a roll; like a start, it may be held through an election.
func (c *Cluster) abortRoll(ctx context.Context, id string) error {
	cctx, cancel := context.WithTimeout(ctx, rollStartTimeout)
	defer cancel()
	return c.obs().RequestJSON(cctx, schema.ClusterSubject(schema.OpRollAbort), schema.RollIDRequest{RollID: id}, nil, &schema.RollStatus{})
}

// finishRolls waits (within) for every active roll to end, the harness's
// and any other, then aborts any of ids still running, so the end state is
// quiet; it returns the status of each roll it had to abort.
func (c *Cluster) finishRolls(ctx context.Context, ids []string, within time.Duration) []string {
	if poll(ctx, within, func() bool {
		h, err := c.ClusterHealth(ctx)
		return err == nil && h.ActiveRolls == 0
	}) {
		return nil
	}
	var stuck []string
	for _, id := range ids {
		st, err := c.rollStatus(ctx, id)
		if err == nil && !rollEnded(st.State) {
			b, _ := json.Marshal(st)
			stuck = append(stuck, string(b))
			_ = c.abortRoll(ctx, id)
		}
	}
	return stuck
}

// rollOutcome is a roll's line in the report: its final state and what the
// harness saw of it.
func (c *Cluster) rollOutcome(ctx context.Context, t *rollTrack) string {
	st, err := c.rollStatus(ctx, t.id)
	if err != nil {
		return fmt.Sprintf("%s: status: %v", t.id, err)
	}
	t.note(st, time.Now())
	line := fmt.Sprintf("%s: %s, %d/%d done, failed %v", t.id, st.State, st.Done, st.Total, st.Failed)
	var seen []string
	if t.everPaused() {
		seen = append(seen, fmt.Sprintf("paused %dx", max(t.pauses, t.autoResumes)))
	}
	if n := t.resumed(); n > 0 {
		seen = append(seen, fmt.Sprintf("resumed %dx by itself", n))
	}
	if t.abortAsked {
		seen = append(seen, "aborted by the harness")
	}
	if len(seen) > 0 {
		line += "; " + strings.Join(seen, ", ")
	}
	if st.Message != "" {
		line += "; " + st.Message
	}
	return line
}

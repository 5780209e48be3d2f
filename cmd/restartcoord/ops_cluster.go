package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/coordinator"
	"github.com/restartcoord/restartcoord/schema"
)

// The cluster verbs talk to the coordinators (micro service orch-coordinator)
// on orch.v1.cluster.*; reads are answered by any coordinator, actions by
// the leader (a follower forwards them).

// How long a NOT_LEADER answer (an election in progress) is retried, and the
// first and longest pause between tries; tests shorten them.
var (
	notLeaderFor     = 10 * time.Second
	notLeaderBackoff = 100 * time.Millisecond
	notLeaderMaxWait = time.Second
)

// clusterCall sends body to subj and returns the reply body, each try
// waiting at most wait. A NOT_LEADER answer is retried for notLeaderFor with
// a growing pause, then given up with exit 3. With asJSON an error envelope
// is printed to stdout as well.
func clusterCall(ctx context.Context, conn *bus.Conn, subj string, body any, wait time.Duration, asJSON bool) ([]byte, error) {
	giveUp := time.Now().Add(notLeaderFor)
	pause := notLeaderBackoff
	tries := 0
	for {
		tries++
		rctx, cancel := context.WithTimeout(ctx, wait)
		data, err := conn.Request(rctx, subj, body, nil)
		cancel()
		if err == nil {
			return data, nil
		}
		var se *schema.Error
		if errors.As(err, &se) && se.Code == schema.CodeNotLeader && ctx.Err() == nil {
			if time.Now().Add(pause).After(giveUp) {
				if asJSON && len(data) > 0 {
					_ = printRaw(data)
				}
				return nil, &exitError{code: exitNoNATS, err: fmt.Errorf("%s: no coordinator took the request as leader within %s (%d tries; an election may be stuck): %w%s",
					subj, notLeaderFor, tries, err, detailSuffix(se))}
			}
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil, &exitError{code: exitNoNATS, err: fmt.Errorf("interrupted while waiting for a leader to answer %s", subj)}
			}
			pause = min(pause*2, notLeaderMaxWait)
			continue
		}
		if asJSON && se != nil && len(data) > 0 {
			_ = printRaw(data)
		}
		return nil, clusterError(ctx, subj, err, wait)
	}
}

// clusterError explains a failed cluster request.
func clusterError(ctx context.Context, subj string, err error, wait time.Duration) error {
	var se *schema.Error
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%s: %w%s", subj, err, detailSuffix(se))
	case ctx.Err() != nil:
		return &exitError{code: exitNoNATS, err: fmt.Errorf("interrupted while waiting for the answer to %s", subj)}
	case errors.Is(err, bus.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no coordinator answered %s within %s: %w", subj, wait, err)
	case errors.Is(err, bus.ErrNoResponders):
		return fmt.Errorf("%w (is a coordinator running? `restartcoord coordinator` runs one, `restartcoord dev` starts one)", err)
	}
	return hint(err)
}

// clusterQuery is the shape of the simple cluster verbs: parse, check, dial,
// ask subj, show. check returns the subject and the body from the positional
// arguments.
func clusterQuery(ctx context.Context, o *opsFlags, args []string, usage string,
	check func(pos []string) (subj string, body any, err error), show func(data []byte) error) error {
	pos, err := parse(o.fs, args, usage)
	if err != nil {
		return err
	}
	subj, body, err := check(pos)
	if err != nil {
		return err
	}
	conn, err := o.dial(ctx, strings.TrimPrefix(subj, schema.Prefix+"."))
	if err != nil {
		return err
	}
	defer conn.Close()
	data, err := clusterCall(ctx, conn, subj, body, o.conn.wait(defaultQueryWait), *o.asJSON)
	if err != nil {
		return err
	}
	return show(data)
}

func noArgs(usage string) func(pos []string) error {
	return func(pos []string) error {
		if len(pos) > 0 {
			return usageErr("unexpected argument %q (usage: %s)", pos[0], usage)
		}
		return nil
	}
}

// --- nodes ---------------------------------------------------------------------

const nodesUsage = "restartcoord nodes [--group G] [--json] [-s URL] [--timeout DURATION]"

// runNodes lists the nodes the coordinators know.
func runNodes(ctx context.Context, args []string) error {
	o := newOpsFlags("nodes", nodesUsage)
	group := o.fs.String("group", "", "only the nodes of this group")
	return clusterQuery(ctx, o, args, nodesUsage, func(pos []string) (string, any, error) {
		if err := noArgs(nodesUsage)(pos); err != nil {
			return "", nil, err
		}
		body := schema.NodesRequest{Group: *group}
		if o.set()["group"] && !schema.ValidToken(*group) {
			return "", nil, usageErr("--group %q: must be 1..64 letters, digits, '-' or '_'", *group)
		}
		return schema.ClusterSubject(schema.OpClusterNodes), body, nil
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var l schema.NodeList
		if err := decodeReply("cluster", schema.OpClusterNodes, data, &l); err != nil {
			return err
		}
		renderNodes(opsOut, &l, *group)
		return nil
	})
}

// --- cluster-health --------------------------------------------------------------

const clusterHealthUsage = "restartcoord cluster-health [--json] [-s URL] [--timeout DURATION]"

// runClusterHealth prints the cluster's health; exit 1 when not healthy.
func runClusterHealth(ctx context.Context, args []string) error {
	o := newOpsFlags("cluster-health", clusterHealthUsage)
	return clusterQuery(ctx, o, args, clusterHealthUsage, func(pos []string) (string, any, error) {
		return schema.ClusterSubject(schema.OpClusterHealth), schema.EmptyRequest{}, noArgs(clusterHealthUsage)(pos)
	}, func(data []byte) error {
		var h schema.ClusterHealth
		if err := decodeReply("cluster", schema.OpClusterHealth, data, &h); err != nil {
			return err
		}
		if *o.asJSON {
			if err := printRaw(data); err != nil {
				return err
			}
		} else {
			renderClusterHealth(opsOut, &h)
		}
		if !h.Healthy {
			return &silentExit{code: exitFailed}
		}
		return nil
	})
}

// --- quarantine, release, forget -------------------------------------------------

const (
	quarantineUsage = "restartcoord quarantine NODE [--json] [-s URL] [--timeout DURATION]"
	releaseUsage    = "restartcoord release NODE [--json] [-s URL] [--timeout DURATION]"
	forgetUsage     = "restartcoord forget NODE --yes [--json] [-s URL] [--timeout DURATION]"
	forgetWarning   = "forget decommissions %s: the coordinators drop it from the registry and its escalation state, so it no longer " +
		"counts against a roll's budget (a node that is still running joins again with its next heartbeat). Run again with --yes to proceed"
)

func runQuarantine(ctx context.Context, args []string) error {
	return nodeAction(ctx, "quarantine", quarantineUsage, args, false)
}

func runRelease(ctx context.Context, args []string) error {
	return nodeAction(ctx, "release", releaseUsage, args, false)
}

func runForget(ctx context.Context, args []string) error {
	return nodeAction(ctx, "forget", forgetUsage, args, true)
}

// nodeAction runs orch.v1.cluster.node.<NODE>.<op>.
func nodeAction(ctx context.Context, op, usage string, args []string, confirm bool) error {
	o := newOpsFlags(op, usage)
	var yes *bool
	if confirm {
		yes = o.fs.Bool("yes", false, "confirm: the node is decommissioned")
	}
	return clusterQuery(ctx, o, args, usage, func(pos []string) (string, any, error) {
		node, err := nodeArg(pos, usage)
		if err != nil {
			return "", nil, err
		}
		if confirm && !*yes {
			return "", nil, usageErr(forgetWarning, node)
		}
		return schema.ClusterNodeSubject(node, op), schema.EmptyRequest{}, nil
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var n schema.ClusterNode
		if err := decodeReply("cluster", op, data, &n); err != nil {
			return err
		}
		renderNodeAction(opsOut, op, &n)
		return nil
	})
}

// --- breaker reset -----------------------------------------------------------------

func runBreaker(ctx context.Context, args []string) error {
	return dispatch(ctx, "breaker", []subverb{
		{"reset", "close the circuit breaker (level 4) so rolls and escalation restarts go on", runBreakerReset},
	}, args)
}

const breakerResetUsage = "restartcoord breaker reset [--json] [-s URL] [--timeout DURATION]"

func runBreakerReset(ctx context.Context, args []string) error {
	o := newOpsFlags("breaker reset", breakerResetUsage)
	return clusterQuery(ctx, o, args, breakerResetUsage, func(pos []string) (string, any, error) {
		return schema.ClusterSubject(schema.OpBreakerReset), schema.EmptyRequest{}, noArgs(breakerResetUsage)(pos)
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var b schema.BreakerState
		if err := decodeReply("cluster", schema.OpBreakerReset, data, &b); err != nil {
			return err
		}
		renderBreaker(opsOut, &b)
		return nil
	})
}

// --- history -----------------------------------------------------------------------

const historyUsage = "restartcoord history [--node N] [--reason R] [--since 24h] [--limit 100] [--json] [-s URL] [--timeout DURATION]"

func runHistory(ctx context.Context, args []string) error {
	o := newOpsFlags("history", historyUsage)
	node := o.fs.String("node", "", "only the restarts of this node")
	reason := o.fs.String("reason", "", "only the restarts for this reason: "+reasonList())
	since := o.fs.String("since", "24h", "how far back: a duration such as 90m, 24h, 7d (d = 24h)")
	limit := o.fs.Int("limit", 100, "at most this many restarts, the newest (1..10000)")
	return clusterQuery(ctx, o, args, historyUsage, func(pos []string) (string, any, error) {
		if err := noArgs(historyUsage)(pos); err != nil {
			return "", nil, err
		}
		body, err := historyBody(o.set(), *node, *reason, *since, *limit, now())
		return schema.ClusterSubject(schema.OpClusterHistory), body, err
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var h historyReply
		if err := decodeReply("cluster", schema.OpClusterHistory, data, &h); err != nil {
			return err
		}
		renderHistory(opsOut, h.Restarts, *since)
		return nil
	})
}

// historyReply is the reply of cluster.history.
type historyReply struct {
	Type     string                     `json:"type"`
	Restarts []coordinator.HistoryEntry `json:"restarts"`
}

// historyBody checks the flags and builds the request.
func historyBody(set map[string]bool, node, reason, since string, limit int, at time.Time) (*coordinator.HistoryRequest, error) {
	req := &coordinator.HistoryRequest{Limit: limit}
	if set["node"] {
		if !schema.ValidToken(node) {
			return nil, usageErr("--node %q: must be 1..64 letters, digits, '-' or '_'", node)
		}
		req.NodeID = node
	}
	if set["reason"] {
		if !schema.Reason(reason).Valid() {
			return nil, usageErr("--reason %q: want one of %s", reason, reasonList())
		}
		req.Reason = schema.Reason(reason)
	}
	d, err := parseSpan(since)
	if err != nil {
		return nil, usageErr("--since: %v", err)
	}
	t := at.Add(-d).UTC().Truncate(time.Second)
	req.Since = &t
	if limit < 1 || limit > 10000 {
		return nil, usageErr("--limit must be 1..10000, got %d", limit)
	}
	return req, nil
}

// --- report ------------------------------------------------------------------------

const reportUsage = "restartcoord report [--window 7d] [--json] [-s URL] [--timeout DURATION]"

// Bounds of the report window (those of coordinator.ReportRequest).
const (
	minReportWindow = time.Minute
	maxReportWindow = 366 * 24 * time.Hour
)

// runReport prints the weekly performance analysis; exit 1 unless every SLO
// is met.
func runReport(ctx context.Context, args []string) error {
	o := newOpsFlags("report", reportUsage)
	window := o.fs.String("window", "7d", "the period to analyse, back from now: 7d, 24h, 90m (d = 24h; 1m..366d)")
	return clusterQuery(ctx, o, args, reportUsage, func(pos []string) (string, any, error) {
		if err := noArgs(reportUsage)(pos); err != nil {
			return "", nil, err
		}
		d, err := parseSpan(*window)
		if err != nil {
			return "", nil, usageErr("--window: %v", err)
		}
		if d < minReportWindow || d > maxReportWindow {
			return "", nil, usageErr("--window must be 1m..366d, got %s", *window)
		}
		return schema.ClusterSubject(schema.OpClusterReport), coordinator.ReportRequest{Window: d.Seconds()}, nil
	}, func(data []byte) error {
		var r coordinator.Report
		if err := decodeReply("cluster", schema.OpClusterReport, data, &r); err != nil {
			return err
		}
		if *o.asJSON {
			if err := printRaw(data); err != nil {
				return err
			}
		} else {
			renderReport(opsOut, &r)
		}
		if !sloMet(&r) {
			return &silentExit{code: exitFailed}
		}
		return nil
	})
}

// sloMet reports whether the report meets every SLO (and has some).
func sloMet(r *coordinator.Report) bool {
	if len(r.SLOCompliance) == 0 {
		return false
	}
	for _, ok := range r.SLOCompliance {
		if !ok {
			return false
		}
	}
	return true
}

// --- durations ---------------------------------------------------------------------

var daysRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)d(.*)$`)

// parseSpan parses a positive duration as Go does, plus days: 7d, 1d12h,
// 1.5d, 24h, 90m.
func parseSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	rest := s
	if m := daysRE.FindStringSubmatch(s); m != nil {
		days, err := strconv.ParseFloat(m[1], 64)
		if err != nil || days > 100000 {
			return 0, fmt.Errorf("%q is not a duration (want e.g. 7d, 24h, 90m)", s)
		}
		d = time.Duration(math.Round(days * float64(24*time.Hour)))
		rest = m[2]
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
			return 0, fmt.Errorf("%q is not a duration (want e.g. 7d, 24h, 90m)", s)
		}
		d += r
	}
	if s == "" || d <= 0 {
		return 0, fmt.Errorf("%q: want a duration above zero such as 7d, 24h, 90m", s)
	}
	return d, nil
}

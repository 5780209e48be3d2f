package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/restartcoord/restartcoord/alerting"
	"github.com/restartcoord/restartcoord/schema"
)

// runAlerts runs `alerts` (the list) and its sub-verbs.
func runAlerts(ctx context.Context, args []string) error {
	subs := []subverb{
		{"list", "firing alerts, deliveries per receiver, failures and silences (the default)", runAlertsList},
		{"silence", "hold the notifications of a kind (on one node) for a while", runAlertsSilence},
		{"unsilence", "end a silence now", runAlertsUnsilence},
		{"test", "send a test notification to one receiver", runAlertsTest},
		{"config", "set or get the delivery configuration (config set FILE | config get)", runAlertsConfig},
	}
	for i, a := range args {
		if a == "--" || !strings.HasPrefix(a, "-") && (i == 0 || !flagTakesValue(args[i-1])) {
			return dispatch(ctx, "alerts", subs, args)
		}
	}
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return dispatch(ctx, "alerts", subs, args)
		}
	}
	return runAlertsList(ctx, args)
}

const alertsListUsage = "restartcoord alerts [list] [--json] [-s URL] [--timeout DURATION]"

func runAlertsList(ctx context.Context, args []string) error {
	o := newOpsFlags("alerts", alertsListUsage)
	return clusterQuery(ctx, o, args, alertsListUsage, func(pos []string) (string, any, error) {
		return schema.ClusterSubject(schema.OpAlerts), schema.EmptyRequest{}, noArgs(alertsListUsage)(pos)
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var st schema.AlertsStatus
		if err := decodeReply("cluster", schema.OpAlerts, data, &st); err != nil {
			return err
		}
		renderAlerts(opsOut, &st)
		return nil
	})
}

func renderAlerts(w io.Writer, st *schema.AlertsStatus) {
	fmt.Fprintf(w, "alert delivery on %s (configuration: %s)\n", st.Leader, st.Source)
	if len(st.Receivers) == 0 {
		fmt.Fprintln(w, "receivers: none (alerts are kept in ORCH_ALERTS and sent nowhere: see docs/ALERTS.md)")
	}
	for _, r := range st.Receivers {
		state := "ready"
		if !r.Ready {
			state = "NOT READY: " + r.Error
		}
		fmt.Fprintf(w, "receiver %s (%s): %s\n", r.Name, r.Type, state)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nfiring (%d):\n", len(st.Firing))
	if len(st.Firing) > 0 {
		fmt.Fprintln(tw, "SEVERITY\tKIND\tNODE/ROLL\tCOUNT\tSINCE\tNOTIFIED\tSILENCED\tMESSAGE")
		for _, g := range st.Firing {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", g.Severity, g.Kind, orDash(g.NodeID+g.RollID), g.Count,
				ago(g.FirstSeen), ago(g.LastNotified), orDash(g.SilencedBy), g.Message)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\ndeliveries (%d, newest first):\n", len(st.Deliveries))
	if len(st.Deliveries) > 0 {
		fmt.Fprintln(tw, "RECEIVER\tALERT\tSTATUS\tSTATE\tATTEMPTS\tWHEN\tERROR")
		for i, d := range st.Deliveries {
			if i == 50 {
				fmt.Fprintf(tw, "...\t%d more (--json lists all)\n", len(st.Deliveries)-50)
				break
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Receiver, d.Fingerprint, d.Status, d.State, d.Attempts,
				ago(d.CreatedAt), orDash(d.LastError))
		}
		tw.Flush()
	}
	if len(st.Failures) > 0 {
		fmt.Fprintf(w, "\nfailures (%d):\n", len(st.Failures))
		for _, d := range st.Failures {
			fmt.Fprintf(w, "  %s -> %s: %s after %d attempt(s): %s\n", d.Fingerprint, d.Receiver, d.State, d.Attempts, d.LastError)
		}
	}
	fmt.Fprintf(w, "\nsilences (%d):\n", len(st.Silences))
	for _, s := range st.Silences {
		fmt.Fprintf(w, "  %s: %s on %s until %s (%s)\n", s.SilenceID, s.Kind, orAll(s.NodeID), s.Until.Format(time.RFC3339), s.Reason)
	}
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func orAll(node string) string {
	if node == "" {
		return "every node"
	}
	return node
}

const alertsSilenceUsage = "restartcoord alerts silence --kind KIND [--node N] --for 2h --reason TEXT [--json] [-s URL] [--timeout DURATION]"

func runAlertsSilence(ctx context.Context, args []string) error {
	o := newOpsFlags("alerts silence", alertsSilenceUsage)
	kind := o.fs.String("kind", "", "the alert kind to silence: "+alertKindList())
	node := o.fs.String("node", "", "only this node's alerts of that kind (default: every node)")
	dur := o.fs.String("for", "", "how long: a duration such as 30m, 2h, 1d (d = 24h; at most 30d)")
	reason := o.fs.String("reason", "", "why (kept with the silence and in the audit trail)")
	return clusterQuery(ctx, o, args, alertsSilenceUsage, func(pos []string) (string, any, error) {
		if err := noArgs(alertsSilenceUsage)(pos); err != nil {
			return "", nil, err
		}
		if *kind == "" || *dur == "" || strings.TrimSpace(*reason) == "" {
			return "", nil, usageErr("--kind, --for and --reason are required (usage: %s)", alertsSilenceUsage)
		}
		d, err := parseSpan(*dur)
		if err != nil {
			return "", nil, usageErr("--for: %v", err)
		}
		req := schema.SilenceRequest{Kind: *kind, NodeID: *node, Duration: d.Seconds(), Reason: *reason}
		if err := req.Validate(); err != nil {
			return "", nil, usageErr("%v", err)
		}
		return schema.ClusterSubject(schema.OpAlertsSilence), req, nil
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var s schema.Silence
		if err := decodeReply("cluster", schema.OpAlertsSilence, data, &s); err != nil {
			return err
		}
		fmt.Fprintf(opsOut, "silence %s: %s on %s until %s (%s)\n`restartcoord alerts unsilence %s` ends it sooner.\n",
			s.SilenceID, s.Kind, orAll(s.NodeID), s.Until.Format(time.RFC3339), s.Reason, s.SilenceID)
		return nil
	})
}

func alertKindList() string {
	var kinds []string
	for k := range schema.AlertKinds {
		if k != schema.AlertTest {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	return strings.Join(kinds, ", ")
}

const alertsUnsilenceUsage = "restartcoord alerts unsilence SILENCE_ID [--json] [-s URL] [--timeout DURATION]"

func runAlertsUnsilence(ctx context.Context, args []string) error {
	o := newOpsFlags("alerts unsilence", alertsUnsilenceUsage)
	return clusterQuery(ctx, o, args, alertsUnsilenceUsage, func(pos []string) (string, any, error) {
		if len(pos) != 1 {
			return "", nil, usageErr("want one silence id (usage: %s)", alertsUnsilenceUsage)
		}
		req := schema.UnsilenceRequest{SilenceID: pos[0]}
		if err := req.Validate(); err != nil {
			return "", nil, usageErr("%v", err)
		}
		return schema.ClusterSubject(schema.OpAlertsUnsilence), req, nil
	}, func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var s schema.Silence
		if err := decodeReply("cluster", schema.OpAlertsUnsilence, data, &s); err != nil {
			return err
		}
		fmt.Fprintf(opsOut, "silence %s ended (%s on %s)\n", s.SilenceID, s.Kind, orAll(s.NodeID))
		return nil
	})
}

const alertsTestUsage = "restartcoord alerts test RECEIVER [--json] [-s URL] [--timeout DURATION]"

// runAlertsTest sends a test notification; exit 1 when the receiver did
// not accept it.
func runAlertsTest(ctx context.Context, args []string) error {
	o := newOpsFlags("alerts test", alertsTestUsage)
	return clusterQuery(ctx, o, args, alertsTestUsage, func(pos []string) (string, any, error) {
		if len(pos) != 1 {
			return "", nil, usageErr("want one receiver name (usage: %s)", alertsTestUsage)
		}
		req := schema.AlertsTestRequest{Receiver: pos[0]}
		if err := req.Validate(); err != nil {
			return "", nil, usageErr("%v", err)
		}
		return schema.ClusterSubject(schema.OpAlertsTest), req, nil
	}, func(data []byte) error {
		var r schema.AlertsTestResult
		if err := decodeReply("cluster", schema.OpAlertsTest, data, &r); err != nil {
			return err
		}
		if *o.asJSON {
			if err := printRaw(data); err != nil {
				return err
			}
		} else if r.Delivered {
			fmt.Fprintf(opsOut, "test notification %s delivered to %s in %.0f ms\n", r.NotificationID, r.Receiver, r.DurationMs)
		} else {
			fmt.Fprintf(opsOut, "test notification to %s NOT delivered: %s\n", r.Receiver, r.Error)
		}
		if !r.Delivered {
			return &silentExit{code: exitFailed}
		}
		return nil
	})
}

func runAlertsConfig(ctx context.Context, args []string) error {
	return dispatch(ctx, "alerts config", []subverb{
		{"set", "validate FILE here, then make it the delivery configuration of every coordinator", runAlertsConfigSet},
		{"get", "print the delivery configuration in force and whether each receiver is ready", runAlertsConfigGet},
	}, args)
}

const alertsConfigSetUsage = "restartcoord alerts config set FILE [--json] [-s URL] [--timeout DURATION]"

func runAlertsConfigSet(ctx context.Context, args []string) error {
	o := newOpsFlags("alerts config set", alertsConfigSetUsage)
	return clusterQuery(ctx, o, args, alertsConfigSetUsage, func(pos []string) (string, any, error) {
		if len(pos) != 1 {
			return "", nil, usageErr("want one file (usage: %s)", alertsConfigSetUsage)
		}
		data, err := readConfigFile(pos[0])
		if err != nil {
			return "", nil, err
		}
		if _, err := alerting.Parse(data); err != nil { // every problem, before anything is sent
			return "", nil, usageErr("%s:\n%v", pos[0], err)
		}
		return schema.ClusterSubject(schema.OpAlertsConfigSet), schema.AlertsConfigSet{Config: string(data)}, nil
	}, showAlertsConfig(o))
}

const alertsConfigGetUsage = "restartcoord alerts config get [--json] [-s URL] [--timeout DURATION]"

func runAlertsConfigGet(ctx context.Context, args []string) error {
	o := newOpsFlags("alerts config get", alertsConfigGetUsage)
	return clusterQuery(ctx, o, args, alertsConfigGetUsage, func(pos []string) (string, any, error) {
		return schema.ClusterSubject(schema.OpAlertsConfigGet), schema.EmptyRequest{}, noArgs(alertsConfigGetUsage)(pos)
	}, showAlertsConfig(o))
}

func showAlertsConfig(o *opsFlags) func(data []byte) error {
	return func(data []byte) error {
		if *o.asJSON {
			return printRaw(data)
		}
		var c schema.AlertsConfig
		if err := decodeReply("cluster", schema.OpAlertsConfigGet, data, &c); err != nil {
			return err
		}
		fmt.Fprintf(opsOut, "alert delivery configuration (source: %s)\n", c.Source)
		for _, r := range c.Receivers {
			state := "ready"
			if !r.Ready {
				state = "NOT READY: " + r.Error
			}
			fmt.Fprintf(opsOut, "receiver %s (%s): %s\n", r.Name, r.Type, state)
		}
		if c.Config != "" {
			fmt.Fprintf(opsOut, "\n%s\n", strings.TrimRight(c.Config, "\n"))
		}
		return nil
	}
}

// readConfigFile reads a configuration file given on the command line,
// bounded.
func readConfigFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if st.Size() > schema.MaxAlertsConfig {
		return nil, usageErr("%s is %d bytes, at most %d", path, st.Size(), schema.MaxAlertsConfig)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	return data, nil
}

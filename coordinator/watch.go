package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// ReportEvery is how often, by default (Config.ReportEvery), the leader
// computes the report over the SLO window (Config.SLOWindow, a week by
// default) to alert on SLO violations and the reconnection rate.
const ReportEvery = time.Hour

// ReconnectionRateWarn: a client reconnection rate under this percentage
// raises reconnection_rate.
const ReconnectionRateWarn = 95

// watches is the leader loop's own state: whether it can hear the fleet
// (hearing), and its slower passes: SLO alerts from the report, and
// maintenance due (a node runs an older configuration than the one stored
// for it: a configuration_update restart is pending).
type watches struct {
	reconnects uint64    // the connection's reconnects seen by hearing
	blindAt    time.Time // when hearing last found the leader cut off
	lastReport time.Time
	lastMaint  time.Time
}

func (c *Coordinator) slowPasses(ctx context.Context, w *watches) {
	now := time.Now()
	if now.Sub(w.lastReport) >= positiveOr(c.cfg.ReportEvery, ReportEvery) {
		w.lastReport = now
		c.sloAlerts(ctx, now)
	}
	if now.Sub(w.lastMaint) >= positiveOr(c.cfg.MaintenanceEvery, DefaultMaintenanceEvery) {
		w.lastMaint = now
		c.maintenanceDue(ctx)
	}
}

// sloAlerts computes the report over the SLO window and tracks
// slo_violation (an SLO of the report not met) and reconnection_rate
// (under ReconnectionRateWarn): each raised once while it holds, resolved
// once a later report meets it again.
func (c *Coordinator) sloAlerts(ctx context.Context, now time.Time) {
	window := positiveOr(c.cfg.SLOWindow, DefaultSLOWindow)
	rep, err := c.report(ctx, now.Add(-window), now)
	if err != nil {
		return
	}
	ok, bad := rep.Reconnection.Reconnected, rep.Reconnection.Failed
	var failing []string
	for _, slo := range sortedKeys(rep.SLOCompliance) {
		if !rep.SLOCompliance[slo] {
			failing = append(failing, slo)
		}
	}
	c.track(ctx, len(failing) > 0, schema.AlertSLOViolation, "", func() (string, map[string]any) {
		if len(failing) > 0 {
			return fmt.Sprintf("SLO not met over the last %s: %s", window, strings.Join(failing, ", ")), map[string]any{"report": rep}
		}
		return fmt.Sprintf("every SLO met over the last %s", window), map[string]any{"slo_compliance": rep.SLOCompliance}
	})
	c.track(ctx, rep.ReconnectionRate < ReconnectionRateWarn, schema.AlertReconnectionRate, "", func() (string, map[string]any) {
		details := map[string]any{"successful": ok, "failed": bad, "rate": rep.ReconnectionRate, "threshold": ReconnectionRateWarn}
		if rep.ReconnectionRate < ReconnectionRateWarn {
			return fmt.Sprintf("client reconnection rate %.1f%% over the last %s (under %d%%)", rep.ReconnectionRate, window, ReconnectionRateWarn), details
		}
		return fmt.Sprintf("client reconnection rate %.1f%% over the last %s (%d%% or more)", rep.ReconnectionRate, window, ReconnectionRateWarn), details
	})
}

// maintenanceDue tracks maintenance_due: a node runs another
// config_version than the one stored for it (ORCH_CONFIG, the node's key
// or its group's), so a configuration_update restart is due; resolved once
// it runs the stored one (or none is stored for it any more). A node whose
// heartbeat names no version yet is left as it is.
func (c *Coordinator) maintenanceDue(ctx context.Context) {
	if !c.conditionsReady(ctx) {
		return
	}
	kv, err := c.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if err != nil {
		return
	}
	for _, v := range c.mem.snapshot() {
		id, running := v.Info.NodeID, v.Heartbeat.ConfigVersion
		if running == "" {
			continue
		}
		want, err := storedVersion(ctx, kv, id, v.Info.Group)
		if err != nil {
			continue // not read: judged by the next check
		}
		c.track(ctx, want != "" && want != running, schema.AlertMaintenanceDue, id, func() (string, map[string]any) {
			details := map[string]any{"running": running, "stored": want}
			if want != "" && want != running {
				return fmt.Sprintf("node %s runs config_version %s; %s is stored for it: a configuration_update restart is due", id, running, want), details
			}
			return fmt.Sprintf("node %s runs config_version %s, the one stored for it: no maintenance due", id, running), details
		})
	}
}

// storedVersion is the config_version stored for a node: its own key's,
// else its group's ("" when neither is stored).
func storedVersion(ctx context.Context, kv jetstream.KeyValue, id, group string) (string, error) {
	for _, key := range []string{id, "group." + group} {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		var cfg struct {
			ConfigVersion string `json:"config_version"`
		}
		if json.Unmarshal(e.Value(), &cfg) != nil {
			return "", nil
		}
		return cfg.ConfigVersion, nil
	}
	return "", nil
}

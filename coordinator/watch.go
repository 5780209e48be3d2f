package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// ReportEvery is how often the leader computes the weekly report to alert
// on SLO violations and the reconnection rate.
const ReportEvery = time.Hour

// watches is the leader loop's own state: whether it can hear the fleet
// (hearing), and its slower passes: SLO alerts from the report, and
// maintenance due (a node runs an older configuration than the one stored
// for it: a configuration_update restart is pending).
type watches struct {
	reconnects   uint64    // the connection's reconnects seen by hearing
	blindAt      time.Time // when hearing last found the leader cut off
	lastReport   time.Time
	lastMaint    time.Time
	maintAlerted map[string]string // node -> config version alerted
}

func (c *Coordinator) slowPasses(ctx context.Context, w *watches) {
	now := time.Now()
	if now.Sub(w.lastReport) >= ReportEvery {
		w.lastReport = now
		c.sloAlerts(ctx, now)
	}
	if now.Sub(w.lastMaint) >= 30*time.Second {
		w.lastMaint = now
		c.maintenanceDue(ctx, w)
	}
}

func (c *Coordinator) sloAlerts(ctx context.Context, now time.Time) {
	from := now.Add(-7 * 24 * time.Hour)
	rep, err := c.report(ctx, from, now)
	if err != nil {
		return
	}
	ok, bad := rep.Reconnection.Reconnected, rep.Reconnection.Failed
	var failing []string
	for slo, met := range rep.SLOCompliance {
		if !met {
			failing = append(failing, slo)
		}
	}
	if len(failing) > 0 {
		c.alert(schema.SeverityCritical, "slo_violation", "", "SLO not met over the last 7 days: "+strings.Join(failing, ", "),
			map[string]any{"report": rep})
	}
	if rep.ReconnectionRate < 95 {
		c.alert(schema.SeverityWarning, "reconnection_rate", "", fmt.Sprintf("client reconnection rate %.1f%% (under 95%%)", rep.ReconnectionRate),
			map[string]any{"successful": ok, "failed": bad})
	}
}

func (c *Coordinator) maintenanceDue(ctx context.Context, w *watches) {
	kv, err := c.bs.JetStream().KeyValue(ctx, schema.BucketConfig)
	if err != nil {
		return
	}
	if w.maintAlerted == nil {
		w.maintAlerted = map[string]string{}
	}
	for _, v := range c.mem.snapshot() {
		running := v.Heartbeat.ConfigVersion
		if running == "" {
			continue
		}
		want := ""
		for _, key := range []string{v.Info.NodeID, "group." + v.Info.Group} {
			if e, err := kv.Get(ctx, key); err == nil {
				var cfg struct {
					ConfigVersion string `json:"config_version"`
				}
				if json.Unmarshal(e.Value(), &cfg) == nil {
					want = cfg.ConfigVersion
				}
				break
			} else if err != jetstream.ErrKeyNotFound {
				break
			}
		}
		if want == "" || want == running || w.maintAlerted[v.Info.NodeID] == want {
			continue
		}
		w.maintAlerted[v.Info.NodeID] = want
		c.alert(schema.SeverityInfo, "maintenance_due", v.Info.NodeID,
			fmt.Sprintf("node %s runs config_version %s; %s is stored for it: a configuration_update restart is due", v.Info.NodeID, running, want),
			map[string]any{"running": running, "stored": want})
	}
}

package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/alerting"
	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// ORCH_COORD keys of alert delivery: its state (groups, deliveries,
// silences) and the configuration set with `restartcoord alerts config set`.
const (
	alertStateKey  = "alerting.state"
	alertConfigKey = "alerting.config"
)

// Configuration sources, as `alerts config get` names them.
const (
	alertSourceStore = "store"
	alertSourceFlags = "flags"
	alertSourceNone  = "none"
)

// notifyTry bounds one try of one notification.
const notifyTry = 10 * time.Second

// delivery runs alert delivery while this coordinator leads: it reads
// ORCH_ALERTS through the durable consumer, groups and routes with the
// alerting engine, sends what is due to the receivers, and keeps its state
// in ORCH_COORD after every change (compare-and-set on the revision), so
// the next leader continues where this one stopped. An alert is
// acknowledged once the state that applied it is stored; a notification is
// marked delivered once the receiver accepted it and that is stored (a
// leader that dies in between leaves it to be sent again, under the same
// notification id and dedup key).
type delivery struct {
	c *Coordinator

	mu        sync.Mutex
	eng       alerting.Engine
	st        *alerting.State // nil while not leading
	rev       uint64
	source    string
	text      string
	notifiers map[string]notify.Notifier
	problems  map[string]string // receiver -> why it cannot deliver
	inflight  map[string]bool
	kick      chan struct{}
}

func newDelivery(c *Coordinator) *delivery {
	return &delivery{c: c, kick: make(chan struct{}, 1), inflight: map[string]bool{}}
}

func (d *delivery) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// run delivers while leading, until ctx ends.
func (d *delivery) run(ctx context.Context) {
	for ctx.Err() == nil {
		if ok, _ := d.c.elect.isLeader(); !ok || d.c.killed.Load() {
			d.stop()
			sleepCtx(ctx, d.c.cfg.Tick)
			continue
		}
		if err := d.lead(ctx); err != nil && ctx.Err() == nil {
			d.c.log.Warn("alert delivery paused", "err", err)
			d.stop()
			sleepCtx(ctx, time.Second)
		}
	}
	d.stop()
}

func (d *delivery) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st, d.rev = nil, 0
}

// lead loads the configuration and the state, then reads and delivers
// until leadership is lost (nil) or the store fails (the error).
func (d *delivery) lead(ctx context.Context) error {
	js := d.c.bs.JetStream()
	if err := d.load(ctx); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cons, err := bus.AlertsConsumer(cctx, js)
	cancel()
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		if ok, _ := d.c.elect.isLeader(); !ok || d.c.killed.Load() {
			return nil
		}
		if d.lost() {
			return errors.New("the alert delivery state could not be stored")
		}
		d.send(ctx)
		wait := d.c.cfg.Tick
		if next := d.next(); !next.IsZero() {
			wait = min(wait, max(time.Until(next), 5*time.Millisecond))
		}
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(max(wait, 10*time.Millisecond)))
		if err != nil {
			return fmt.Errorf("reading %s: %w", schema.StreamAlerts, err)
		}
		for m := range batch.Messages() {
			if err := d.apply(ctx, m); err != nil {
				return err
			}
			d.send(ctx)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("reading %s: %w", schema.StreamAlerts, err)
		}
		select {
		case <-d.kick:
		default:
		}
	}
	return nil
}

// load reads the configuration (the store's, else the flags') and the
// state, and builds the receivers.
func (d *delivery) load(ctx context.Context) error {
	src, text, cfg, err := d.config(ctx)
	if err != nil {
		return err
	}
	st := alerting.NewState()
	value, rev, err := d.c.state.get(ctx, alertStateKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev = 0
	case err != nil:
		return fmt.Errorf("reading the alert delivery state: %w", err)
	default:
		if err := json.Unmarshal(value, st); err != nil {
			d.c.log.Error("alert delivery state unreadable: starting afresh", "err", err)
			st = alerting.NewState()
		}
		if st.Groups == nil {
			st.Groups = map[string]*alerting.Group{}
		}
		if st.Deliveries == nil {
			st.Deliveries = map[string]*alerting.Delivery{}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.configure(src, text, cfg)
	d.st, d.rev = st, rev
	d.inflight = map[string]bool{}
	d.c.log.Info("alert delivery leading", "source", src, "receivers", len(cfg.Receivers), "groups", len(st.Groups),
		"pending", pendingCount(st))
	return nil
}

// configure installs cfg (d.mu held).
func (d *delivery) configure(src, text string, cfg alerting.Config) {
	hc := d.c.cfg.AlertsHTTP
	if hc == nil {
		hc = &http.Client{Timeout: notifyTry}
	}
	d.eng = alerting.NewEngine(cfg)
	d.source, d.text = src, text
	d.notifiers, d.problems = alerting.BuildNotifiers(cfg, os.Getenv, os.ReadFile, hc)
	for name, why := range d.problems {
		d.c.log.Error("alert receiver cannot deliver", "receiver", name, "err", why)
	}
}

// config is the configuration in force: the stored one, else the flags'.
func (d *delivery) config(ctx context.Context) (src, text string, cfg alerting.Config, err error) {
	value, _, err := d.c.state.get(ctx, alertConfigKey)
	switch {
	case err == nil:
		cfg, perr := alerting.Parse(value)
		if perr != nil { // validated when set: only a store written by hand gets here
			d.c.log.Error("stored alert configuration invalid: using the flags'", "err", perr)
			break
		}
		return alertSourceStore, string(value), cfg, nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return "", "", cfg, fmt.Errorf("reading the alert configuration: %w", err)
	}
	if d.c.cfg.Alerts != nil {
		return alertSourceFlags, d.c.cfg.AlertsText, *d.c.cfg.Alerts, nil
	}
	return alertSourceNone, "", alerting.Default(), nil
}

// apply applies one alert, stores the state, then acknowledges it.
func (d *delivery) apply(ctx context.Context, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return err
	}
	var a schema.Alert
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.Validate() != nil {
		d.c.log.Warn("alert not deliverable: skipped", "subject", m.Subject(), "seq", meta.Sequence.Stream, "err", errors.Join(err, a.Validate()))
		return m.Ack()
	}
	d.mu.Lock()
	if d.st == nil {
		d.mu.Unlock()
		return nil
	}
	changed := d.eng.Apply(d.st, a, meta.Sequence.Stream, time.Now())
	var serr error
	if changed {
		serr = d.save(ctx)
	}
	d.mu.Unlock()
	if serr != nil {
		return serr // not acknowledged: read again by whoever leads next
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.DoubleAck(actx); err != nil {
		d.c.log.Warn("alert acknowledgement lost: it will be read again (and applied once)", "seq", meta.Sequence.Stream, "err", err)
	}
	return nil
}

// save stores the state (d.mu held), compare-and-set on its revision: a
// write refused means another leader wrote, and this one stops.
func (d *delivery) save(ctx context.Context) error {
	d.eng.Prune(d.st, time.Now())
	data, err := json.Marshal(d.st)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rev uint64
	if d.rev == 0 {
		rev, err = d.c.state.kv.Create(sctx, alertStateKey, data)
	} else {
		rev, err = d.c.state.kv.Update(sctx, alertStateKey, data, d.rev)
	}
	if err != nil {
		return fmt.Errorf("storing the alert delivery state: %w", err)
	}
	d.rev = rev
	return nil
}

// lost reports whether the state was dropped (a write refused).
func (d *delivery) lost() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st == nil
}

func (d *delivery) next() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st == nil {
		return time.Time{}
	}
	return d.eng.Next(d.st, time.Now())
}

// send starts a try of every delivery due, each in its own goroutine.
func (d *delivery) send(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st == nil {
		return
	}
	before := len(d.st.Deliveries)
	due := d.eng.Plan(d.st, time.Now())
	if len(d.st.Deliveries) != before {
		if err := d.save(ctx); err != nil {
			d.c.log.Warn("alert deliveries not stored: not sent yet", "err", err)
			d.st = nil
			return
		}
	}
	for _, del := range due {
		if d.inflight[del.Key] {
			continue
		}
		d.inflight[del.Key] = true
		n, key, recv := del.Notification, del.Key, del.Receiver
		nt := d.notifiers[recv]
		why := d.problems[recv]
		d.c.wg.Add(1)
		go func() {
			defer d.c.wg.Done()
			var err error
			if nt == nil {
				if why == "" {
					why = "no such receiver in the configuration"
				}
				err = &notify.DeliveryError{Receiver: recv, Retryable: true, RetryAfter: time.Minute, Err: errors.New(why)}
			} else {
				tctx, cancel := context.WithTimeout(ctx, notifyTry)
				err = nt.Notify(tctx, n)
				cancel()
			}
			d.record(ctx, key, recv, err)
		}()
	}
}

// record stores the outcome of one try.
func (d *delivery) record(ctx context.Context, key, recv string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.inflight, key)
	if d.st == nil {
		return // leadership lost meanwhile: the next leader tries it again
	}
	if err != nil {
		d.c.log.Warn("alert notification not delivered", "receiver", recv, "notification", key, "err", err)
	}
	d.eng.Record(d.st, key, err, time.Now())
	d.c.met.notified(recv, err)
	if serr := d.save(ctx); serr != nil {
		d.c.log.Warn("alert delivery outcome not stored", "err", serr)
		d.st = nil
	}
	d.wake()
}

func pendingCount(st *alerting.State) int {
	n := 0
	for _, del := range st.Deliveries {
		if del.Status == alerting.DeliveryPending {
			n++
		}
	}
	return n
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

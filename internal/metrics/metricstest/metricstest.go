// Package metricstest reads a Prometheus registry for tests: a series'
// values by labels, every metric name registered collectors describe, and
// promlint over the project's own families. For tests only.
package metricstest

import (
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// Prefix starts the name of every series of the project.
const Prefix = "restartcoord_"

// Series gathers g and returns metric name's samples, keyed by their labels
// ("kind=graceful,result=success", sorted, without the labels in skip): the
// value of a counter or gauge, the sample count of a histogram or summary.
// A family not gathered gives an empty map.
func Series(g prometheus.Gatherer, name string, skip ...string) (map[string]float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var kv []string
			for _, lp := range m.GetLabel() {
				if !slices.Contains(skip, lp.GetName()) {
					kv = append(kv, lp.GetName()+"="+lp.GetValue())
				}
			}
			slices.Sort(kv)
			out[strings.Join(kv, ",")] = value(m)
		}
	}
	return out, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Summary != nil:
		return float64(m.Summary.GetSampleCount())
	default:
		return m.GetUntyped().GetValue()
	}
}

// Lint runs promlint over the families of g whose names start with Prefix
// (the Go and process collectors' are not ours to judge).
func Lint(g prometheus.Gatherer) ([]promlint.Problem, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	mfs = slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return !strings.HasPrefix(mf.GetName(), Prefix) })
	return promlint.NewWithMetricFamilies(mfs).Lint()
}

// Recorder is a prometheus.Registerer that registers on another and keeps
// the name of every metric the collectors registered through it describe:
// the names they can emit, whether or not they have emitted them yet.
type Recorder struct {
	next  prometheus.Registerer
	mu    sync.Mutex
	names map[string]bool
}

// NewRecorder records what is registered on next.
func NewRecorder(next prometheus.Registerer) *Recorder {
	return &Recorder{next: next, names: map[string]bool{}}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Register implements prometheus.Registerer.
func (r *Recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	r.mu.Unlock()
	return r.next.Register(c)
}

// MustRegister implements prometheus.Registerer.
func (r *Recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister implements prometheus.Registerer.
func (r *Recorder) Unregister(c prometheus.Collector) bool { return r.next.Unregister(c) }

// Names are the metric names described so far, sorted.
func (r *Recorder) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.names))
	for n := range r.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

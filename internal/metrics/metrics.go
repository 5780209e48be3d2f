// Package metrics is the Prometheus plumbing shared by the binaries: a
// registry with the Go runtime and process collectors, and the HTTP handler
// that serves it. The series themselves are defined where they are measured
// (node/metrics.go, coordinator/metrics.go) and listed in docs/METRICS.md;
// this package defines none.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry is a registry with the Go runtime collector and the process
// collector (CPU, memory, open file descriptors of this process) registered.
// A fresh registry rather than prometheus.DefaultRegisterer: several
// supervisors and a coordinator can share one process (restartcoord dev),
// and tests build as many registries as they like.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus exposition formats. A collector that
// fails (a coordinator's read of its state timing out, say) costs its own
// series only, not the scrape (ContinueOnError); at most two scrapes run at
// once, and one waits at most 10 s for its turn, so a slow collector cannot
// pile up goroutines; promhttp's own counters of scrapes and errors are
// registered on reg.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
		Registry:            reg,
		EnableOpenMetrics:   true,
	}))
}

package metrics

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

const namespace = "prefork"

// maxScrapesInFlight bounds concurrent scrapes, and with them the snapshot
// requests queued at the supervisor's owner goroutine. Further scrapes get
// 503 until one finishes.
const maxScrapesInFlight = 4

// Bucket bounds in seconds. A handoff (accept to descriptor sent) takes
// microseconds unless the supervisor is overloaded; a pending connection
// waits at most for a worker to start, which is milliseconds to seconds.
var (
	handoffBuckets = []float64{
		1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4,
		5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1,
	}
	pendingWaitBuckets = []float64{
		1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
		0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
	}
)

// Metrics is the supervisor's Prometheus exposition: a private registry
// holding the Go and process collectors, a collector that asks the
// supervisor for a [Snapshot] at each scrape, and the histograms the hot
// path observes directly.
//
// The Observe methods are safe for concurrent use and may be called on a
// nil *Metrics, which discards the observation, so callers need not check
// whether metrics are enabled.
type Metrics struct {
	registry    *prometheus.Registry
	handoff     prometheus.Histogram
	pendingWait prometheus.Histogram
}

// New returns Metrics whose scrapes call source for the supervisor's
// current Snapshot. Each call gets a context that expires after
// [ScrapeTimeout], and source should give up when it does; concurrent
// scrapes (at most a few) call source concurrently. If source
// returns an error, the scrape still serves every other metric and the
// error is logged and counted in promhttp_metric_handler_errors_total.
func New(source func(ctx context.Context) (Snapshot, error)) *Metrics {
	if source == nil {
		panic("metrics: nil source")
	}
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		handoff: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "handoff_duration_seconds",
			Help:      "Time from accepting a connection to sending its descriptor to a worker.",
			Buckets:   handoffBuckets,
		}),
		pendingWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "pending_wait_seconds",
			Help:      "Time a connection waited in the pending queue for a ready worker.",
			Buckets:   pendingWaitBuckets,
		}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newSnapshotCollector(source),
		m.handoff,
		m.pendingWait,
	)
	return m
}

// ObserveHandoff records the time from accept to descriptor sent. It is
// called on the hot path and does not allocate.
func (m *Metrics) ObserveHandoff(d time.Duration) {
	if m == nil {
		return
	}
	m.handoff.Observe(d.Seconds())
}

// ObservePendingWait records how long a connection waited in the pending
// queue before it was handed to a worker or dropped.
func (m *Metrics) ObservePendingWait(d time.Duration) {
	if m == nil {
		return
	}
	m.pendingWait.Observe(d.Seconds())
}

// Registerer is where the supervisor's other parts (the admin listener)
// register their own metrics, served with these.
func (m *Metrics) Registerer() prometheus.Registerer { return m.registry }

// Handler returns an http.Handler serving the registry in the Prometheus
// exposition formats. Errors are not logged; [Serve] uses a handler that
// logs them.
func (m *Metrics) Handler() http.Handler {
	return m.handler(nil)
}

func (m *Metrics) handler(log *zap.Logger) http.Handler {
	opts := promhttp.HandlerOpts{
		// A failed snapshot must not hide the Go and process metrics,
		// which are what an operator needs when the supervisor is stuck.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.registry,
		MaxRequestsInFlight: maxScrapesInFlight,
	}
	if log != nil {
		opts.ErrorLog = errorLog{log}
	}
	return promhttp.InstrumentMetricHandler(m.registry, promhttp.HandlerFor(m.registry, opts))
}

// errorLog adapts a zap.Logger to promhttp.Logger.
type errorLog struct{ log *zap.Logger }

func (l errorLog) Println(v ...any) {
	l.log.Warn("metrics: scrape", zap.String("error", strings.TrimSuffix(fmt.Sprintln(v...), "\n")))
}

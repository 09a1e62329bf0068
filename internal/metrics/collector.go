package metrics

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/latency"
)

// ScrapeTimeout bounds how long one scrape waits for the supervisor's
// Snapshot, so that a busy or stopping supervisor cannot pile up scrapes.
const ScrapeTimeout = time.Second

// snapshotCollector turns one Snapshot per scrape into const metrics. It
// holds no state of its own besides the descriptors, so concurrent scrapes
// are independent of each other.
type snapshotCollector struct {
	source func(ctx context.Context) (Snapshot, error)

	workers         *prometheus.Desc
	spawns          *prometheus.Desc
	exits           *prometheus.Desc
	handoffs        *prometheus.Desc
	accepted        *prometheus.Desc
	handoffFailures *prometheus.Desc
	reroutes        *prometheus.Desc
	dropped         *prometheus.Desc
	handedBack      *prometheus.Desc
	unplaced        *prometheus.Desc
	rebalanceAsks   *prometheus.Desc
	pending         *prometheus.Desc
	reloads         *prometheus.Desc
	verdicts        *prometheus.Desc
	baking          *prometheus.Desc
	openConns       *prometheus.Desc
	requests        *prometheus.Desc
	rss             *prometheus.Desc
	heartbeatAge    *prometheus.Desc
	protocolErrors  *prometheus.Desc
	freezes         *prometheus.Desc
	duration        *prometheus.Desc
	sticky          stickyDescs
}

func newSnapshotCollector(source func(ctx context.Context) (Snapshot, error)) *snapshotCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
	}
	return &snapshotCollector{
		source:          source,
		workers:         d("workers", "Live worker processes by lifecycle state.", "state"),
		spawns:          d("worker_spawns_total", "Worker processes started, by cause.", "cause"),
		exits:           d("worker_exits_total", "Worker processes that exited, by cause.", "cause"),
		handoffs:        d("handoffs_total", "Connections handed off to the worker in each slot.", "slot"),
		accepted:        d("connections_accepted_total", "Connections the supervisor accepted on each listener (rr; reuseport: a vacant slot's backlog).", "listener"),
		handoffFailures: d("handoff_failures_total", "Connection handoffs that failed because the worker was gone or its queue was full."),
		reroutes:        d("handoff_reroutes_total", "Connections re-routed to another worker after a failed handoff, including ones read back from a dead worker's queue."),
		dropped:         d("connections_dropped_total", "Connections closed unserved because the pending queue was full or they waited too long."),
		handedBack:      d("connections_handed_back_total", "Idle keep-alive connections draining workers handed back to move to another worker (rr)."),
		unplaced:        d("connections_handed_back_unplaced_total", "Connections handed back and closed because no worker could take them."),
		rebalanceAsks:   d("rebalance_asked_total", "Idle keep-alive connections workers were asked to give back so that new workers get a share (-rebalance)."),
		pending:         d("pending_connections", "Connections waiting for a ready worker."),
		reloads:         d("reloads_total", "Reloads of all workers, by result.", "result"),
		verdicts:        d("canary_verdicts_total", "Verdicts on canary reloads: pass, fail, or insufficient traffic.", "verdict"),
		baking:          d("canary_baking", "1 while a canary reload's new workers serve beside the old generation, to be judged."),
		openConns:       d("worker_open_connections", "Connections the worker in each slot has open.", "slot"),
		requests:        d("worker_requests_total", "Requests served by the worker in each slot; resets when the slot's worker is replaced.", "slot"),
		rss:             d("worker_resident_memory_bytes", "Resident set size of the worker in each slot.", "slot"),
		heartbeatAge:    d("worker_heartbeat_age_seconds", "Time since the last heartbeat from the worker in each slot; absent until the first one.", "slot"),
		protocolErrors:  d("worker_protocol_errors_total", "Frames from workers that broke the worker protocol (malformed, unexpected, or carrying descriptors)."),
		freezes:         d("supervisor_freezes_total", "Times the supervisor found it had not run for a while (frozen, paused or stopped) and restarted its workers' heartbeat clocks."),
		duration:        d("request_duration_seconds", "Time the worker in each slot took to serve a request, as cluster.CountRequests measures it; resets when the slot's worker is replaced.", "slot"),
		sticky:          newStickyDescs(d),
	}
}

// Describe implements prometheus.Collector.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.workers, c.spawns, c.exits, c.handoffs, c.accepted, c.handoffFailures,
		c.reroutes, c.dropped, c.handedBack, c.unplaced, c.rebalanceAsks, c.pending, c.reloads, c.verdicts, c.baking, c.openConns,
		c.requests, c.rss, c.heartbeatAge, c.protocolErrors, c.freezes,
		c.duration,
	} {
		ch <- d
	}
	c.sticky.describe(ch)
}

// Collect implements prometheus.Collector. If the supervisor cannot answer,
// it reports one invalid metric: the registry then returns the error from
// Gather while still gathering the other collectors.
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	s, err := c.source(ctx)
	if err != nil {
		err = fmt.Errorf("metrics: supervisor snapshot: %w", err)
		ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(err), err)
		return
	}
	c.collectSupervisor(ch, &s)
	c.collectWorkers(ch, s.Workers)
}

func (c *snapshotCollector) collectSupervisor(ch chan<- prometheus.Metric, s *Snapshot) {
	labeled(ch, c.workers, prometheus.GaugeValue, control.States, s.StateCounts)
	labeled(ch, c.spawns, prometheus.CounterValue, control.SpawnCauses, s.Spawns)
	labeled(ch, c.exits, prometheus.CounterValue, control.ExitCauses, s.Exits)
	labeled(ch, c.reloads, prometheus.CounterValue, reloadResults, s.Reloads)
	labeled(ch, c.verdicts, prometheus.CounterValue, canaryVerdicts, s.CanaryVerdicts)
	baking := 0.0
	if s.CanaryBaking {
		baking = 1
	}
	ch <- constMetric(c.baking, prometheus.GaugeValue, baking)
	for slot, n := range s.Handoffs {
		ch <- constMetric(c.handoffs, prometheus.CounterValue, float64(n), strconv.Itoa(slot))
	}
	for name, n := range s.Accepted {
		ch <- constMetric(c.accepted, prometheus.CounterValue, float64(n), name)
	}
	ch <- constMetric(c.handoffFailures, prometheus.CounterValue, float64(s.HandoffFailures))
	ch <- constMetric(c.reroutes, prometheus.CounterValue, float64(s.Reroutes))
	ch <- constMetric(c.dropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- constMetric(c.handedBack, prometheus.CounterValue, float64(s.HandedBack))
	ch <- constMetric(c.unplaced, prometheus.CounterValue, float64(s.Unplaced))
	ch <- constMetric(c.rebalanceAsks, prometheus.CounterValue, float64(s.RebalanceAsks))
	ch <- constMetric(c.pending, prometheus.GaugeValue, float64(s.PendingDepth))
	ch <- constMetric(c.protocolErrors, prometheus.CounterValue, float64(s.ProtocolErrors))
	ch <- constMetric(c.freezes, prometheus.CounterValue, float64(s.Freezes))
	c.sticky.collect(ch, s.Sticky)
}

// collectWorkers reports one set of series per slot. During a rollout a
// slot holds two workers, the draining one and its replacement: their
// connections, requests, memory and latency histograms add up, and the
// slot's heartbeat age is the older of the two, so a stuck worker is not
// hidden by a healthy one.
func (c *snapshotCollector) collectWorkers(ch chan<- prometheus.Metric, workers []Worker) {
	bySlot := make(map[int]Worker, len(workers))
	for _, w := range workers {
		if w.Latency != nil {
			l := *w.Latency // a copy: the sum below must not change the snapshot
			w.Latency = &l
		}
		t, ok := bySlot[w.Slot]
		if !ok {
			bySlot[w.Slot] = w
			continue
		}
		t.OpenConns += w.OpenConns
		t.Requests += w.Requests
		t.RSSBytes += w.RSSBytes
		t.HeartbeatAge = max(t.HeartbeatAge, w.HeartbeatAge)
		switch {
		case t.Latency == nil:
			t.Latency = w.Latency
		case w.Latency != nil:
			t.Latency.Add(w.Latency)
		}
		bySlot[w.Slot] = t
	}
	for _, w := range bySlot {
		slot := strconv.Itoa(w.Slot)
		ch <- constMetric(c.openConns, prometheus.GaugeValue, float64(w.OpenConns), slot)
		ch <- constMetric(c.requests, prometheus.CounterValue, float64(w.Requests), slot)
		ch <- constMetric(c.rss, prometheus.GaugeValue, float64(w.RSSBytes), slot)
		if w.HeartbeatAge >= 0 {
			ch <- constMetric(c.heartbeatAge, prometheus.GaugeValue, w.HeartbeatAge.Seconds(), slot)
		}
		if w.Latency != nil {
			ch <- constHistogram(c.duration, w.Latency, slot)
		}
	}
}

// constHistogram is l as a Prometheus histogram: cumulative counts at each
// of latency.Bounds, in seconds, and the overflow bucket in the count.
func constHistogram(d *prometheus.Desc, l *latency.Counts, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, latency.NumBounds)
	var cum uint64
	for i, b := range latency.Bounds {
		cum += l.Buckets[i]
		buckets[b.Seconds()] = cum
	}
	m, err := prometheus.NewConstHistogram(d, l.Total(), l.Sum.Seconds(), buckets, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// labeled emits one metric per value of d's single label: every value in
// known, zero if absent from values, then any further value the supervisor
// reported, so an unexpected cause is shown rather than lost.
func labeled[K ~string, V int | uint64](ch chan<- prometheus.Metric, d *prometheus.Desc, typ prometheus.ValueType, known []K, values map[K]V) {
	for _, k := range known {
		ch <- constMetric(d, typ, float64(values[k]), string(k))
	}
	for k, n := range values {
		if !slices.Contains(known, k) {
			ch <- constMetric(d, typ, float64(n), string(k))
		}
	}
}

// constMetric is prometheus.MustNewConstMetric without the panic: a label
// value the registry rejects (invalid UTF-8) fails that one metric, not the
// scrape.
func constMetric(d *prometheus.Desc, typ prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, typ, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

package metrics

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"go.uber.org/zap/zaptest/observer"
)

func busySnapshot() Snapshot {
	return Snapshot{
		Workers: []Worker{
			{Slot: 0, OpenConns: 3, Requests: 120, RSSBytes: 12 << 20, HeartbeatAge: 250 * time.Millisecond},
			{Slot: 1, OpenConns: 0, Requests: 0, RSSBytes: 8 << 20, HeartbeatAge: -1},
		},
		StateCounts:     map[control.State]int{"ready": 1, "starting": 1},
		Spawns:          map[control.Cause]uint64{"start": 2, "crash": 1},
		Exits:           map[control.Cause]uint64{"crash": 1},
		Handoffs:        map[int]uint64{0: 120, 1: 4},
		Accepted:        map[string]uint64{"main": 100, "web": 24},
		HandoffFailures: 2,
		Reroutes:        1,
		Dropped:         3,
		PendingDepth:    5,
		Reloads:         map[string]uint64{"success": 1},
		ProtocolErrors:  7,
		Freezes:         1,
	}
}

type series struct {
	name   string
	labels []string
	want   float64
}

func checkSeries(t *testing.T, mfs map[string]*dto.MetricFamily, want []series) {
	t.Helper()
	for _, w := range want {
		have, ok := sample(mfs, w.name, w.labels...)
		if !ok {
			t.Errorf("%s%v: missing", w.name, w.labels)
			continue
		}
		if have != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, have, w.want)
		}
	}
}

func TestScrapeReportsSnapshot(t *testing.T) {
	src := &fakeSource{}
	src.set(busySnapshot(), nil)
	s := serve(t, New(src.Snapshot))

	mfs := scrape(t, s)
	checkSeries(t, mfs, []series{
		{"prefork_workers", []string{"state", "starting"}, 1},
		{"prefork_workers", []string{"state", "ready"}, 1},
		{"prefork_workers", []string{"state", "draining"}, 0},
		{"prefork_worker_spawns_total", []string{"cause", "start"}, 2},
		{"prefork_worker_spawns_total", []string{"cause", "crash"}, 1},
		{"prefork_worker_spawns_total", []string{"cause", "hang"}, 0},
		{"prefork_worker_spawns_total", []string{"cause", "recycle"}, 0},
		{"prefork_worker_spawns_total", []string{"cause", "reload"}, 0},
		{"prefork_worker_spawns_total", []string{"cause", "scale"}, 0},
		{"prefork_worker_exits_total", []string{"cause", "crash"}, 1},
		{"prefork_worker_exits_total", []string{"cause", "stop"}, 0},
		{"prefork_handoffs_total", []string{"slot", "0"}, 120},
		{"prefork_handoffs_total", []string{"slot", "1"}, 4},
		{"prefork_connections_accepted_total", []string{"listener", "main"}, 100},
		{"prefork_connections_accepted_total", []string{"listener", "web"}, 24},
		{"prefork_handoff_failures_total", nil, 2},
		{"prefork_handoff_reroutes_total", nil, 1},
		{"prefork_connections_dropped_total", nil, 3},
		{"prefork_pending_connections", nil, 5},
		{"prefork_reloads_total", []string{"result", "success"}, 1},
		{"prefork_reloads_total", []string{"result", "failure"}, 0},
		{"prefork_worker_open_connections", []string{"slot", "0"}, 3},
		{"prefork_worker_open_connections", []string{"slot", "1"}, 0},
		{"prefork_worker_requests_total", []string{"slot", "0"}, 120},
		{"prefork_worker_resident_memory_bytes", []string{"slot", "0"}, 12 << 20},
		{"prefork_worker_resident_memory_bytes", []string{"slot", "1"}, 8 << 20},
		{"prefork_worker_heartbeat_age_seconds", []string{"slot", "0"}, 0.25},
		{"prefork_worker_protocol_errors_total", nil, 7},
		{"prefork_supervisor_freezes_total", nil, 1},
	})
	if _, ok := sample(mfs, "prefork_worker_heartbeat_age_seconds", "slot", "1"); ok {
		t.Error("heartbeat age reported for a worker that never sent one")
	}
	for name, want := range map[string]dto.MetricType{
		"prefork_workers":                    dto.MetricType_GAUGE,
		"prefork_worker_spawns_total":        dto.MetricType_COUNTER,
		"prefork_handoffs_total":             dto.MetricType_COUNTER,
		"prefork_connections_accepted_total": dto.MetricType_COUNTER,
		"prefork_worker_requests_total":      dto.MetricType_COUNTER,
		"prefork_pending_connections":        dto.MetricType_GAUGE,
		"prefork_handoff_duration_seconds":   dto.MetricType_HISTOGRAM,
		"prefork_pending_wait_seconds":       dto.MetricType_HISTOGRAM,
		"prefork_worker_open_connections":    dto.MetricType_GAUGE,
		"prefork_connections_dropped_total":  dto.MetricType_COUNTER,
	} {
		if have := mfs[name].GetType(); have != want {
			t.Errorf("%s: type %v, want %v", name, have, want)
		}
	}

	// The supervisor moves on: slot 1's worker is replaced by one in
	// slot 2, a reload finishes and a cause this package does not know
	// about shows up.
	next := busySnapshot()
	next.Workers = []Worker{
		{Slot: 0, OpenConns: 1, Requests: 150, RSSBytes: 13 << 20, HeartbeatAge: time.Second},
		{Slot: 2, OpenConns: 2, Requests: 9, RSSBytes: 9 << 20, HeartbeatAge: 0},
	}
	next.StateCounts = map[control.State]int{"ready": 2}
	next.Spawns = map[control.Cause]uint64{"start": 2, "crash": 1, "reload": 2, "mystery": 1}
	next.Handoffs = map[int]uint64{0: 150, 1: 4, 2: 9}
	next.PendingDepth = 0
	next.Reloads = map[string]uint64{"success": 2}
	src.set(next, nil)

	mfs = scrape(t, s)
	checkSeries(t, mfs, []series{
		{"prefork_workers", []string{"state", "starting"}, 0},
		{"prefork_workers", []string{"state", "ready"}, 2},
		{"prefork_worker_spawns_total", []string{"cause", "reload"}, 2},
		{"prefork_worker_spawns_total", []string{"cause", "mystery"}, 1},
		{"prefork_handoffs_total", []string{"slot", "0"}, 150},
		{"prefork_handoffs_total", []string{"slot", "2"}, 9},
		{"prefork_pending_connections", nil, 0},
		{"prefork_reloads_total", []string{"result", "success"}, 2},
		{"prefork_worker_requests_total", []string{"slot", "0"}, 150},
		{"prefork_worker_requests_total", []string{"slot", "2"}, 9},
		{"prefork_worker_heartbeat_age_seconds", []string{"slot", "0"}, 1},
		{"prefork_worker_heartbeat_age_seconds", []string{"slot", "2"}, 0},
	})
	if _, ok := sample(mfs, "prefork_worker_open_connections", "slot", "1"); ok {
		t.Error("slot 1 still reported after its worker went away")
	}
}

func TestSlotSharedDuringRollout(t *testing.T) {
	src := &fakeSource{}
	snap := busySnapshot()
	snap.Workers = []Worker{
		{Slot: 0, OpenConns: 4, Requests: 100, RSSBytes: 10 << 20, HeartbeatAge: 3 * time.Second}, // draining
		{Slot: 0, OpenConns: 1, Requests: 2, RSSBytes: 6 << 20, HeartbeatAge: -1},                 // its replacement
		{Slot: 1, OpenConns: 2, Requests: 5, RSSBytes: 7 << 20, HeartbeatAge: -1},
		{Slot: 1, OpenConns: 0, Requests: 0, RSSBytes: 7 << 20, HeartbeatAge: -1},
	}
	src.set(snap, nil)
	m := New(src.Snapshot)

	// Two workers in one slot must not produce duplicate series, which the
	// registry would reject.
	if _, err := m.registry.Gather(); err != nil {
		t.Fatalf("Gather: %v", err)
	}
	mfs := scrape(t, serve(t, m))
	checkSeries(t, mfs, []series{
		{"prefork_worker_open_connections", []string{"slot", "0"}, 5},
		{"prefork_worker_requests_total", []string{"slot", "0"}, 102},
		{"prefork_worker_resident_memory_bytes", []string{"slot", "0"}, 16 << 20},
		{"prefork_worker_heartbeat_age_seconds", []string{"slot", "0"}, 3},
		{"prefork_worker_open_connections", []string{"slot", "1"}, 2},
	})
	if _, ok := sample(mfs, "prefork_worker_heartbeat_age_seconds", "slot", "1"); ok {
		t.Error("heartbeat age reported for a slot whose workers never sent one")
	}
}

func TestHistogramsCountObservations(t *testing.T) {
	src := &fakeSource{}
	m := New(src.Snapshot)
	s := serve(t, m)

	h := histogram(scrape(t, s), "prefork_handoff_duration_seconds")
	if h == nil {
		t.Fatal("prefork_handoff_duration_seconds: missing")
	}
	if have := h.GetSampleCount(); have != 0 {
		t.Fatalf("handoff count before observing = %d, want 0", have)
	}

	for range 3 {
		m.ObserveHandoff(3 * time.Microsecond)
	}
	m.ObserveHandoff(20 * time.Millisecond)
	m.ObservePendingWait(300 * time.Millisecond)

	mfs := scrape(t, s)
	h = histogram(mfs, "prefork_handoff_duration_seconds")
	if have, want := h.GetSampleCount(), uint64(4); have != want {
		t.Errorf("handoff count = %d, want %d", have, want)
	}
	if have, _ := bucket(h, 5e-6); have != 3 {
		t.Errorf("handoff bucket le=5e-6 = %d, want 3", have)
	}
	if have, _ := bucket(h, 0.025); have != 4 {
		t.Errorf("handoff bucket le=0.025 = %d, want 4", have)
	}
	if have, want := h.GetSampleSum(), 3*3e-6+0.02; have < want*0.999 || have > want*1.001 {
		t.Errorf("handoff sum = %v, want %v", have, want)
	}
	// The parser lists the +Inf bucket too.
	if b := h.GetBucket(); b[0].GetUpperBound() != 1e-6 || b[len(b)-2].GetUpperBound() != 0.1 {
		t.Errorf("handoff buckets %v, want 1e-06..0.1", b)
	}

	p := histogram(mfs, "prefork_pending_wait_seconds")
	if p == nil {
		t.Fatal("prefork_pending_wait_seconds: missing")
	}
	if have := p.GetSampleCount(); have != 1 {
		t.Errorf("pending wait count = %d, want 1", have)
	}
	if below, _ := bucket(p, 0.25); below != 0 {
		t.Errorf("pending wait bucket le=0.25 = %d, want 0", below)
	}
	if have, _ := bucket(p, 0.5); have != 1 {
		t.Errorf("pending wait bucket le=0.5 = %d, want 1", have)
	}
}

func TestSourceErrorKeepsOtherMetrics(t *testing.T) {
	errStopping := errors.New("supervisor stopping")
	src := &fakeSource{}
	src.set(busySnapshot(), errStopping)
	m := New(src.Snapshot)
	core, logs := observer.New(zap.WarnLevel)
	s, err := Serve("127.0.0.1:0", m, zap.New(core))
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	defer s.Close()
	m.ObserveHandoff(time.Microsecond)

	mfs := scrape(t, s) // fails the test unless 200 and parseable
	for _, name := range []string{
		"go_goroutines",
		"go_memstats_alloc_bytes",
		"prefork_handoff_duration_seconds",
		"prefork_pending_wait_seconds",
	} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s: missing after a failed snapshot", name)
		}
	}
	if runtime.GOOS == "linux" {
		if _, ok := mfs["process_resident_memory_bytes"]; !ok {
			t.Error("process_resident_memory_bytes: missing after a failed snapshot")
		}
	}
	for _, name := range []string{"prefork_workers", "prefork_handoffs_total", "prefork_worker_requests_total"} {
		if _, ok := mfs[name]; ok {
			t.Errorf("%s: reported although the snapshot failed", name)
		}
	}

	// The handler counts the failure after serving the scrape, so the
	// next scrape shows it.
	checkSeries(t, scrape(t, s), []series{
		{"promhttp_metric_handler_errors_total", []string{"cause", "gathering"}, 1},
	})

	entries := logs.FilterMessage("metrics: scrape").All()
	if len(entries) != 2 {
		t.Fatalf("logged %d scrape errors, want 2", len(entries))
	}
	if msg := entries[0].ContextMap()["error"]; !strings.Contains(msg.(string), "supervisor stopping") {
		t.Errorf("logged %q, want it to mention the source's error", msg)
	}

	// The registry reports the source's error itself, wrapped.
	_, err = m.registry.Gather()
	if !errors.Is(err, errStopping) {
		t.Errorf("Gather error = %v, want it to wrap %v", err, errStopping)
	}
	if !strings.HasPrefix(err.Error(), "metrics: ") {
		t.Errorf("Gather error = %q, want the metrics: prefix", err)
	}

	// Once the supervisor answers again, so do its metrics.
	src.set(busySnapshot(), nil)
	checkSeries(t, scrape(t, s), []series{{"prefork_pending_connections", nil, 5}})
}

func TestSourceGetsScrapeDeadline(t *testing.T) {
	var (
		have     time.Duration
		deadline bool
	)
	m := New(func(ctx context.Context) (Snapshot, error) {
		var dl time.Time
		dl, deadline = ctx.Deadline()
		have = time.Until(dl)
		return Snapshot{}, nil
	})
	if _, err := m.registry.Gather(); err != nil {
		t.Fatalf("Gather: %v", err)
	}
	if !deadline {
		t.Fatal("source called without a deadline")
	}
	if have <= 0 || have > ScrapeTimeout {
		t.Errorf("source deadline in %v, want within (0, %v]", have, ScrapeTimeout)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	m := New((&fakeSource{}).Snapshot)
	if allocs := testing.AllocsPerRun(1000, func() { m.ObserveHandoff(7 * time.Microsecond) }); allocs != 0 {
		t.Errorf("ObserveHandoff allocates %v times per call, want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(1000, func() { m.ObservePendingWait(7 * time.Millisecond) }); allocs != 0 {
		t.Errorf("ObservePendingWait allocates %v times per call, want 0", allocs)
	}
}

func TestNilMetricsDiscardsObservations(t *testing.T) {
	var m *Metrics
	m.ObserveHandoff(time.Microsecond)
	m.ObservePendingWait(time.Millisecond)
}

func TestMetricsPassLint(t *testing.T) {
	src := &fakeSource{}
	src.set(busySnapshot(), nil)
	m := New(src.Snapshot)
	m.ObserveHandoff(time.Microsecond)
	m.ObservePendingWait(time.Millisecond)
	m.Handler() // registers promhttp's own metrics too

	problems, err := testutil.GatherAndLint(m.registry)
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func BenchmarkObserveHandoff(b *testing.B) {
	m := New((&fakeSource{}).Snapshot)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveHandoff(5 * time.Microsecond)
		}
	})
}

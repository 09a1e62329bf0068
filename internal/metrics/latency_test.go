package metrics

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/prefork/prefork/internal/latency"
)

// Each slot gets a request duration histogram: its workers' histograms
// added up (two during a rollout), none for a slot whose workers report
// no latency.
func TestRequestDurationPerSlot(t *testing.T) {
	var draining, replacement latency.Recorder
	for range 3 {
		draining.Observe(time.Millisecond)
	}
	draining.Observe(20 * time.Second) // past the last bound
	replacement.Observe(200 * time.Microsecond)
	d, r := draining.Snapshot(), replacement.Snapshot()
	src := &fakeSource{}
	snap := busySnapshot()
	snap.Workers = []Worker{
		{Slot: 0, Latency: &d, HeartbeatAge: -1},
		{Slot: 0, Latency: &r, HeartbeatAge: -1},
		{Slot: 1, HeartbeatAge: -1}, // an older worker
	}
	src.set(snap, nil)
	mfs := scrape(t, serve(t, New(src.Snapshot)))
	mf := mfs["prefork_request_duration_seconds"]
	if mf == nil || mf.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("prefork_request_duration_seconds: missing or not a histogram: %v", mf)
	}
	if len(mf.GetMetric()) != 1 || !hasLabels(mf.GetMetric()[0], []string{"slot", "0"}) {
		t.Fatalf("want one series, slot 0; have %v", mf.GetMetric())
	}
	h := mf.GetMetric()[0].GetHistogram()
	if have := h.GetSampleCount(); have != 5 {
		t.Errorf("count %d, want 5", have)
	}
	if have, want := h.GetSampleSum(), 3e-3+20+2e-4; have < want*0.999 || have > want*1.001 {
		t.Errorf("sum %v, want %v", have, want)
	}
	for _, tc := range []struct {
		le   float64
		want uint64
	}{{1e-4, 0}, {2.5e-4, 1}, {1e-3, 4}, {10, 4}} {
		if have, ok := bucket(h, tc.le); !ok || have != tc.want {
			t.Errorf("bucket le=%v = %d (%v), want %d", tc.le, have, ok, tc.want)
		}
	}
	// The sum over the slot must not have changed a worker's snapshot.
	if d.Total() != 4 {
		t.Errorf("a worker's histogram was modified: total %d, want 4", d.Total())
	}
}

package supervisor

import (
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/latency"
)

// Status reports requests/s and latency over the last few heartbeats, not
// since the worker started: a slow start is forgotten after recentBeats.
func TestStatusRecentLatency(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	p := h.cur(1)
	var rec latency.Recorder
	beat := func(requests uint64, each time.Duration) {
		for range requests {
			rec.Observe(each)
		}
		l := rec.Snapshot()
		hb := p.beat
		hb.Requests += requests
		hb.Latency = &l
		h.advance(time.Second)
		h.beat(p, hb)
	}
	worker := func() (perSec, p50, p99 float64) {
		for _, w := range h.s.status().Workers {
			if w.PID == p.pid {
				return w.RequestsPerS, w.P50S, w.P99S
			}
		}
		t.Fatalf("worker %d not in status", p.pid)
		return
	}
	beat(100, 2*time.Second) // slow at first
	if _, p50, _ := worker(); p50 < 1 {
		t.Fatalf("p50 %vs after 100 requests of 2s, want above 1s", p50)
	}
	for range recentBeats {
		beat(300, time.Millisecond)
	}
	perSec, p50, p99 := worker()
	if perSec != 300 {
		t.Errorf("requests/s %v, want 300", perSec)
	}
	if p50 > 0.001 || p99 > 0.001 || p50 <= 0 {
		t.Errorf("p50 %vs p99 %vs, want at most the last beats' 1ms", p50, p99)
	}
	// A worker that sends no latency (an older build) shows none.
	other := h.cur(2)
	h.beat(other, ipc.Heartbeat{Requests: 10})
	for _, w := range h.s.status().Workers {
		if w.PID == other.pid && (w.P50S != 0 || w.P99S != 0) {
			t.Errorf("worker without latency shows p50 %v p99 %v, want 0", w.P50S, w.P99S)
		}
	}
}

func TestRecentAcrossRestartedCounts(t *testing.T) {
	var r recent
	start := time.Unix(1000, 0)
	a := latency.Counts{}
	a.Buckets[5] = 50
	r.add(start.Add(time.Second), ipc.Heartbeat{Requests: 50, Latency: &a})
	b := latency.Counts{}
	b.Buckets[5] = 10 // fewer than before: not the same recorder
	r.add(start.Add(2*time.Second), ipc.Heartbeat{Requests: 10, Latency: &b})
	perSec, lat, ok := r.figures(start)
	if !ok || lat != b {
		t.Fatalf("figures = %v, %+v, %v; want the newer counts", perSec, lat, ok)
	}
	if perSec != 0 {
		t.Fatalf("requests/s %v when the count went down, want 0", perSec)
	}
}

// The control reader takes the heartbeat of a worker built before latency
// (29 bytes) and of one that sends it, as the same worker may be either
// across a reload that deploys a new build.
func TestBeatsOldAndNew(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	p := h.cur(1)
	var l latency.Counts
	l.Buckets[latency.Bucket(3*time.Millisecond)] = 9
	isBeat := func(ev any) bool { _, ok := ev.(evBeat); return ok }
	for _, hb := range []ipc.Heartbeat{{Requests: 5, Healthy: true}, {Requests: 9, Healthy: true, Latency: &l}} {
		if err := h.fake(p).ctl.Send(ipc.AppendHeartbeat(nil, hb), nil); err != nil {
			t.Fatal(err)
		}
		h.await("heartbeat", isBeat)
		if p.beat.Requests != hb.Requests || (p.beat.Latency == nil) != (hb.Latency == nil) {
			t.Fatalf("beat %+v recorded as %+v", hb, p.beat)
		}
	}
	if *p.beat.Latency != l || h.s.counts.protocol != 0 {
		t.Fatalf("latency %+v, protocol errors %d; want %+v and none", p.beat.Latency, h.s.counts.protocol, l)
	}
}

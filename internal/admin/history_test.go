package admin

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
)

func status(workers int) *control.Status {
	st := &control.Status{}
	for i := range workers {
		st.Workers = append(st.Workers, control.WorkerStatus{Slot: i + 1, PID: 100 + i, RequestsPerS: float64(i), RSSBytes: 1 << 20})
	}
	return st
}

// The ring holds the last HistorySamples samples, oldest first, and once
// full it allocates nothing more: its memory is bounded however long the
// supervisor runs.
func TestRingBounded(t *testing.T) {
	var r ring
	t0 := time.Unix(1000, 0)
	st := status(8)
	for i := range 3 * HistorySamples {
		r.add(t0.Add(time.Duration(i)*time.Second), st)
	}
	got := r.samples()
	if len(got) != HistorySamples {
		t.Fatalf("%d samples, want %d", len(got), HistorySamples)
	}
	if first, last := got[0].Time, got[len(got)-1].Time; first != 1000+2*HistorySamples || last != 1000+3*HistorySamples-1 {
		t.Fatalf("samples from %v to %v", first, last)
	}
	if w := got[0].Workers; len(w) != 8 || w[7].PID != 107 {
		t.Fatalf("workers %+v", w)
	}
	i := 3 * HistorySamples
	allocs := testing.AllocsPerRun(2*HistorySamples, func() {
		r.add(t0.Add(time.Duration(i)*time.Second), st)
		i++
	})
	if allocs != 0 {
		t.Fatalf("a full ring allocates %v a sample", allocs)
	}
}

// The hub keeps the last HistoryEvents events, encoded once; a stream that
// says which it has seen (Last-Event-ID) gets only the ones after.
func TestHubRecentAndReplay(t *testing.T) {
	f := start(t, Options{})
	h := f.srv.api.hub
	for i := range HistoryEvents + 50 {
		h.publish(control.Event{Kind: control.EventFork, Slot: i})
	}
	events, last := h.recentEvents()
	if len(events) != HistoryEvents || last != HistoryEvents+50 {
		t.Fatalf("%d recent events, last %d", len(events), last)
	}
	var e control.Event
	if err := json.Unmarshal(events[0], &e); err != nil || e.Slot != 50 {
		t.Fatalf("oldest kept %s (%v)", events[0], err)
	}
	c := h.join(last - 3)
	defer h.leave(c)
	got := h.take(c, nil)
	if len(got) != 3 || !strings.HasPrefix(string(got[0]), "id: 248\ndata: {") {
		t.Fatalf("replay after %d: %q", last-3, got)
	}
	// A big event reaches the page without its bulk.
	h.publish(control.Event{Kind: control.EventMessage, Slot: 2, PID: 7, Msg: strings.Repeat("x", 64<<10)})
	got = h.take(c, got[:0])
	if len(got) != 1 || len(got[0]) > 600 || !strings.Contains(string(got[0]), `bytes in all`) || !strings.Contains(string(got[0]), `"slot":2`) {
		t.Fatalf("big event as %q", got)
	}
}

func TestHistoryEndpoint(t *testing.T) {
	f := start(t, Options{})
	f.bus.Publish(control.Event{Kind: control.EventExit, PID: 43, Reason: control.CauseCrash})
	waitFor(t, "a sample and the event", func() bool {
		events, _ := f.srv.api.hub.recentEvents()
		return len(f.srv.api.ring.samples()) > 0 && len(events) == 1
	})
	code, body := get(t, f.base+"/api/history")
	var h History
	if err := json.Unmarshal([]byte(body), &h); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/history: %d %v\n%s", code, err, body)
	}
	if len(h.Samples) == 0 || h.Samples[0].Workers[0].PID != 43 || h.Samples[0].Workers[0].P99S != 0.002 || h.IntervalS != 1 {
		t.Fatalf("samples %+v", h)
	}
	if len(h.Events) != 1 || !strings.Contains(string(h.Events[0]), `"crash"`) || h.LastEvent != 1 {
		t.Fatalf("events %s, last %d", h.Events, h.LastEvent)
	}
}

package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// What the supervisor remembers for a page opened later: one sample of
// every worker a second for the last 5 minutes, and the last 200 events
// (kept by the hub).
const (
	SampleEvery    = time.Second
	HistorySamples = 300
	HistoryEvents  = 200
)

// WorkerSample is one worker at one sample time.
type WorkerSample struct {
	Slot         int     `json:"slot"`
	PID          int     `json:"pid"`
	RequestsPerS float64 `json:"requests_per_s"`
	P50S         float64 `json:"p50_s"`
	P99S         float64 `json:"p99_s"`
	RSSBytes     uint64  `json:"rss_bytes"`
	CPUPercent   float64 `json:"cpu_percent"`
}

// Sample is every worker at one time.
type Sample struct {
	Time    float64        `json:"t"` // Unix seconds
	Workers []WorkerSample `json:"workers"`
}

// History is what GET /api/history answers: samples oldest first, events
// oldest first, and the sequence number of the last event, which the page
// sends as Last-Event-ID when it opens the event stream, to get what came
// after.
type History struct {
	IntervalS float64           `json:"interval_s"`
	Samples   []Sample          `json:"samples"`
	Events    []json.RawMessage `json:"events"`
	LastEvent uint64            `json:"last_event"`
}

// ring is a fixed-size ring of samples. Each slot keeps its Workers slice
// and reuses it, so a supervisor sampling for weeks holds the same memory
// as after 5 minutes.
type ring struct {
	mu      sync.Mutex
	buf     [HistorySamples]Sample
	head, n int
}

// add records st as the sample at t.
func (r *ring) add(t time.Time, st *control.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := (r.head + r.n) % len(r.buf)
	if r.n == len(r.buf) {
		r.head = (r.head + 1) % len(r.buf)
	} else {
		r.n++
	}
	s := &r.buf[i]
	s.Time = float64(t.UnixMilli()) / 1e3
	s.Workers = s.Workers[:0]
	for _, w := range st.Workers {
		s.Workers = append(s.Workers, WorkerSample{
			Slot: w.Slot, PID: w.PID, RequestsPerS: w.RequestsPerS, P50S: w.P50S, P99S: w.P99S,
			RSSBytes: w.RSSBytes, CPUPercent: w.CPUPercent,
		})
	}
}

// samples returns a copy of the ring, oldest first.
func (r *ring) samples() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Sample, r.n)
	for k := range out {
		s := r.buf[(r.head+k)%len(r.buf)]
		out[k] = Sample{Time: s.Time, Workers: append([]WorkerSample(nil), s.Workers...)}
	}
	return out
}

// sample asks the supervisor for its status every SampleEvery until ctx
// ends. A status it cannot get (the supervisor is busy or stopping) is a
// gap in the charts.
func (a *api) sample(ctx context.Context) {
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			sctx, cancel := context.WithTimeout(ctx, SampleEvery)
			resp := a.Control.Do(sctx, control.Request{Cmd: control.CmdStatus})
			cancel()
			if !resp.OK || resp.Status == nil {
				a.Log.Debug("admin: no status to sample", zap.String("error", resp.Error))
				continue
			}
			a.ring.add(now, resp.Status)
		}
	}
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	events, last := a.hub.recentEvents()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, History{
		IntervalS: SampleEvery.Seconds(),
		Samples:   a.ring.samples(),
		Events:    events,
		LastEvent: last,
	})
}

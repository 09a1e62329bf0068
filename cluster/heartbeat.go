package cluster

import (
	"bytes"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// HeartbeatInterval is how often a worker reports to the supervisor.
const HeartbeatInterval = time.Second

// SetHealthCheck sets the check run before every heartbeat. A heartbeat
// should prove that the worker can still serve, not only that one goroutine
// runs: run the application's own health handler in process, say. A check
// that returns an error marks the heartbeat unhealthy; one that blocks delays
// the heartbeat, and the supervisor treats a long silence as a hang.
func SetHealthCheck(check func() error) {
	w, err := get()
	if err != nil {
		return
	}
	w.check.Store(&check)
}

// CountRequests wraps h so that heartbeats report requests served (and
// -max-requests recycling can count them) and, to a supervisor that asks
// for it, a histogram of how long h took to serve them: from the call to
// h.ServeHTTP to its return, which for a handler that does not stream is
// the time to the response's last byte written. With the histogram go the
// requests counted by status class (2xx, 3xx, 4xx, 5xx) and handler
// panics, which a canary reload judges a release by (outcome.go).
func CountRequests(h http.Handler) http.Handler {
	w, err := get()
	if err != nil {
		return h
	}
	return w.countRequests(h)
}

// RequestServed counts one request served and records took, how long it
// took, in the latency histogram: what [CountRequests] does for an
// http.Handler, for a server that is not net/http (fasthttp, a gRPC
// interceptor, ...). Call it once per request, when the response has been
// written. It does not allocate; standalone it does nothing.
func RequestServed(took time.Duration) {
	w, err := get()
	if err != nil {
		return
	}
	w.requestServed(took)
}

func (w *worker) requestServed(took time.Duration) {
	w.requests.Add(1)
	if w.latency != nil {
		w.latency.Observe(took)
	}
}

func (w *worker) countRequests(h http.Handler) http.Handler {
	if w.latency == nil {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			w.requests.Add(1)
			h.ServeHTTP(rw, r)
		})
	}
	if w.outcomes != nil {
		return w.countOutcomes(h) // outcome.go
	}
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.requests.Add(1)
		start := time.Now()
		// Deferred: a handler that panics (http.ErrAbortHandler when the
		// client left) served a request too, often a slow one.
		defer func() { w.latency.Observe(time.Since(start)) }()
		h.ServeHTTP(rw, r)
	})
}

func (w *worker) heartbeat() {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	buf := make([]byte, 0, ipc.MaxHeartbeatFrame)
	for range t.C {
		healthy := true
		if check := w.check.Load(); check != nil {
			healthy = (*check)() == nil
		}
		closed := w.closed.Load()
		hb := ipc.Heartbeat{
			Conns:      w.accepted.Load() - closed,
			Requests:   w.requests.Load(),
			RSS:        rss(),
			Goroutines: uint32(runtime.NumGoroutine()),
			Healthy:    healthy,
		}
		if w.latency != nil {
			l := w.latency.Snapshot()
			hb.Latency = &l
			if w.outcomes != nil {
				o := w.outcomes.Snapshot()
				hb.Outcomes = &o
			}
		}
		buf = ipc.AppendHeartbeat(buf[:0], hb)
		w.ctl.Send(buf, nil)
	}
}

// kickLoad asks reportLoad to send the closed count; bursts coalesce.
func (w *worker) kickLoad() {
	if !w.loadReports {
		return
	}
	select {
	case w.loadKick <- struct{}{}:
	default:
	}
}

func (w *worker) reportLoad() {
	buf := make([]byte, 0, 8)
	for range w.loadKick {
		buf = ipc.AppendUint32(buf[:0], ipc.TypeLoad, uint32(w.closed.Load()))
		w.ctl.Send(buf, nil)
	}
}

var pageSize = uint64(os.Getpagesize())

// rss reads the resident set size from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(string(f[1]), 10, 64)
	return n * pageSize
}

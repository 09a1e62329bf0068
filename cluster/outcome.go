package cluster

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prefork/prefork/internal/latency"
)

// RequestServedStatus is [RequestServed] for a server that knows the
// status it answered with: it also counts the request by status class, as
// [CountRequests] does, for a canary reload's error-rate gate. A code below
// 100 counts as a handler's panic.
func RequestServedStatus(took time.Duration, code int) {
	w, err := get()
	if err != nil {
		return
	}
	w.requestServed(took)
	if w.outcomes != nil {
		c := latency.ClassOf(code)
		if code < 100 {
			c = latency.ClassPanic
		}
		w.outcomes.Count(c)
	}
}

// statusWriter notes the status a handler answers with. It is pooled:
// net/http forbids using a ResponseWriter after ServeHTTP returns, so it
// can be reused then, which keeps CountRequests free of allocations.
type statusWriter struct {
	http.ResponseWriter
	code int
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 && code >= 200 { // 1xx are informational: more follows
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// ReadFrom keeps net/http's sendfile path for io.Copy into the response.
func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return io.Copy(s.ResponseWriter, r)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush and Hijack: handlers still find the interfaces by assertion.
func (s *statusWriter) Flush() {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	http.NewResponseController(s.ResponseWriter).Flush()
}

func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

// countOutcomes is countRequests with outcomes: latency, and the status
// class or panic of every request.
func (w *worker) countOutcomes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.requests.Add(1)
		start := time.Now()
		sw := statusWriters.Get().(*statusWriter)
		sw.ResponseWriter, sw.code = rw, 0
		defer w.answered(sw, start)
		h.ServeHTTP(sw, r)
	})
}

// answered records a request countOutcomes served. A panic is counted and
// passed on to net/http, which logs it; http.ErrAbortHandler (the client
// left, a proxy aborted) is no failure of the handler's.
func (w *worker) answered(sw *statusWriter, start time.Time) {
	w.latency.Observe(time.Since(start))
	if v := recover(); v != nil {
		if v == http.ErrAbortHandler {
			w.outcomes.Count(latency.ClassOf(sw.code))
		} else {
			w.outcomes.Count(latency.ClassPanic)
		}
		panic(v) // sw is not reused: the panic may still reach it
	}
	w.outcomes.Count(latency.ClassOf(sw.code)) // 0: nothing written, net/http answers 200
	sw.ResponseWriter = nil
	statusWriters.Put(sw)
}

package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// Health is the /health body (exported so callers and tests can decode it).
type Health struct {
	Status     string  `json:"status"` // "ok"
	PID        int     `json:"pid"`
	Worker     int     `json:"worker"`
	Slot       int     `json:"slot"`   // the worker's slot, which a sticky key keeps: the same as Worker
	Client     string  `json:"client"` // the client's address as the worker sees it (a PROXY header's, behind a proxy)
	Mode       string  `json:"mode"`
	Generation int     `json:"generation"`
	UptimeS    float64 `json:"uptime_s"`
	Goroutines int     `json:"goroutines"`
	Build      string  `json:"build,omitempty"`    // the release, as built with -X main.build
	Listener   string  `json:"listener,omitempty"` // the supervisor's listener that answered, if it has several
}

// healthBufs holds response buffers for /health.
var healthBufs = sync.Pool{
	New: func() any {
		b := make([]byte, 0, 256)
		return &b
	},
}

// newHealthHandler answers with the JSON encoding of a Health for info.
//
// Only the client, uptime and goroutine count change between requests, so the rest of
// the body is encoded once, here, and each request appends the two numbers
// into a pooled buffer.
func newHealthHandler(info Info, pid int) http.HandlerFunc {
	mode, _ := json.Marshal(info.Mode) // a string always marshals
	prefix := fmt.Appendf(nil, `{"status":"ok","pid":%d,"worker":%d,"slot":%d,"mode":%s,"generation":%d,"client":`,
		pid, info.WorkerID, info.WorkerID, mode, info.Generation)
	if info.Build != "" {
		build, _ := json.Marshal(info.Build)
		prefix = fmt.Appendf(prefix[:len(prefix)-len(`"client":`)], `"build":%s,"client":`, build)
	}
	started := info.Started

	return func(w http.ResponseWriter, r *http.Request) {
		bp := healthBufs.Get().(*[]byte)
		b := append((*bp)[:0], prefix...)
		b = strconv.AppendQuote(b, r.RemoteAddr)
		b = append(b, `,"uptime_s":`...)
		b = strconv.AppendFloat(b, time.Since(started).Seconds(), 'f', 3, 64)
		b = append(b, `,"goroutines":`...)
		b = strconv.AppendInt(b, int64(runtime.NumGoroutine()), 10)
		if info.Listener != nil {
			if name := info.Listener(r); name != "" {
				b = append(b, `,"listener":`...)
				b = strconv.AppendQuote(b, name)
			}
		}
		b = append(b, "}\n"...)

		w.Header()["Content-Type"] = contentTypeJSON
		w.Write(b)

		*bp = b
		healthBufs.Put(bp)
	}
}

// CheckHealth runs the /health handler in process (httptest.NewRecorder style,
// no network) and returns an error unless it answered 200 with status "ok".
// The worker calls it before each heartbeat to prove it can still serve.
//
// CheckHealth has no timeout of its own: a handler that hangs hangs the
// caller too, and the heartbeats it would have sent stop, which is the
// signal the supervisor acts on. A panic in h is returned as an error.
func CheckHealth(h http.Handler) (err error) {
	req, err := http.NewRequest(http.MethodGet, "/health", nil)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	rec := &recorder{header: make(http.Header)}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("health check: handler panicked: %v", v)
		}
	}()
	h.ServeHTTP(rec, req)

	if rec.code != http.StatusOK {
		return fmt.Errorf("health check: status %d, want %d", rec.code, http.StatusOK)
	}
	var have Health
	if err := json.Unmarshal(rec.body.Bytes(), &have); err != nil {
		return fmt.Errorf("health check: decoding body: %w", err)
	}
	if have.Status != "ok" {
		return fmt.Errorf("health check: status %q, want %q", have.Status, "ok")
	}
	return nil
}

// recorder is the minimal http.ResponseWriter CheckHealth needs. It keeps
// net/http/httptest out of the worker binary.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

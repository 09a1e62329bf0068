package demo

import (
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"
)

// Info describes the worker process serving the routes.
type Info struct {
	WorkerID   int       // PREFORK_WORKER_ID, 0 when run standalone
	Mode       string    // "rr", "shared", "reuseport" or "standalone"
	Generation int       // reload generation, 0 standalone
	Started    time.Time // process start; the zero value means "now"
	// Claim claims a sticky key for this worker's slot (cluster.Claim);
	// nil: GET /session answers 404.
	Claim func(key string) error
	// Build names the release, in /health; "" leaves it out.
	Build string
	// Listener names the listener a request came in on (cluster.ListenerName
	// of its local address), for /health; nil, or "", for none.
	Listener func(*http.Request) string
}

// Shared header values. They are assigned directly into response headers to
// skip the canonicalisation and slice allocation of Header.Set.
var (
	contentTypeText = []string{"text/plain; charset=utf-8"}
	contentTypeJSON = []string{"application/json"}
)

// NewRouter returns the chi router with every demo route.
//
// Unknown paths answer 404 and known paths with the wrong method answer 405.
// A panicking handler is logged to log at error level and answered with 500.
// A nil log discards those reports.
func NewRouter(info Info, log *zap.Logger) http.Handler {
	if log == nil {
		log = zap.NewNop()
	}
	if info.Started.IsZero() {
		info.Started = time.Now()
	}
	pid := os.Getpid()

	r := chi.NewRouter()
	r.Use(recoverer(log))
	r.Get("/health", newHealthHandler(info, pid))
	r.Get("/pid", newPIDHandler(pid))
	// POST /submit answers like /pid: a request clients do not retry,
	// for the keep-alive race tests and benchmarks.
	r.Post("/submit", newPIDHandler(pid))
	r.Get("/ip", ipHandler)
	r.Get("/heavy", heavyHandler)
	r.Get("/sleep", sleepHandler)
	r.Get("/spin", spinHandler)
	if info.Claim != nil {
		r.Get("/session", newSessionHandler(info))
	}
	return r
}

// newPIDHandler answers with pid in decimal, without a trailing newline.
func newPIDHandler(pid int) http.HandlerFunc {
	body := strconv.AppendInt(nil, int64(pid), 10)
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = contentTypeText
		w.Write(body)
	}
}

// ipHandler answers with the client's address, host:port, as the serving
// process sees it (under the supervisor, the address the connection came
// from, not the supervisor's).
func ipHandler(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = contentTypeText
	w.Write([]byte(r.RemoteAddr))
}

// recoverer turns a panic in next into a 500 and an error log entry.
// http.ErrAbortHandler is re-raised so net/http aborts the response quietly.
func recoverer(log *zap.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic serving request",
					zap.String("method", r.Method),
					zap.String("path", r.URL.Path),
					zap.Any("panic", v),
					zap.StackSkip("stack", 1),
				)
				w.WriteHeader(http.StatusInternalServerError)
			}()
			next.ServeHTTP(w, r)
		})
	}
}

package cluster

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prefork/prefork/internal/latency"
)

// CountRequests counts every request by how it ended: the status the
// handler wrote (200 when it wrote nothing), or its panic, which still
// reaches net/http; a client that left (http.ErrAbortHandler) is no
// panic of the handler's.
func TestCountRequestsOutcomes(t *testing.T) {
	w := &worker{latency: new(latency.Recorder), outcomes: new(latency.OutcomeRecorder)}
	h := w.countRequests(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nothing":
		case "/early-hints":
			rw.WriteHeader(http.StatusEarlyHints)
			rw.Write([]byte("body"))
		case "/flush":
			rw.(http.Flusher).Flush()
		case "/panic":
			panic(errors.New("boom"))
		case "/abort":
			rw.WriteHeader(http.StatusBadGateway)
			panic(http.ErrAbortHandler)
		case "/404":
			http.NotFound(rw, r)
		case "/302":
			http.Redirect(rw, r, "/", http.StatusFound)
		default:
			rw.WriteHeader(http.StatusServiceUnavailable)
			rw.WriteHeader(http.StatusOK) // superfluous: the first counts
		}
	}))
	for _, path := range []string{"/nothing", "/early-hints", "/flush", "/panic", "/abort", "/404", "/302", "/503"} {
		func() {
			defer func() {
				r := recover()
				if want := path == "/panic" || path == "/abort"; (r != nil) != want {
					t.Errorf("%s: panic %v reached net/http: %v", path, r, want)
				}
			}()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		}()
	}
	want := latency.Outcomes{latency.ClassOK: 3, latency.ClassRedirect: 1, latency.ClassClientError: 1, latency.ClassServerError: 2, latency.ClassPanic: 1}
	if have := w.outcomes.Snapshot(); want != have {
		t.Fatalf("outcomes: want %v, have %v", want, have)
	}
	if l := w.latency.Snapshot(); l.Total() != 8 || w.requests.Load() != 8 {
		t.Fatalf("%d latencies and %d requests, want 8 of each", l.Total(), w.requests.Load())
	}
}

package demo

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// discard is a reusable ResponseWriter, so the benchmarks below count the
// router's and handler's allocations rather than the recorder's.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

func benchmarkRoute(b *testing.B, path string) {
	h := NewRouter(Info{WorkerID: 1, Mode: "rr"}, nil)
	req := httptest.NewRequest(http.MethodGet, path, nil)

	b.Run("recorder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	})
	b.Run("discard", func(b *testing.B) {
		w := &discard{h: make(http.Header)}
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	})
}

func BenchmarkPID(b *testing.B)    { benchmarkRoute(b, "/pid") }
func BenchmarkHealth(b *testing.B) { benchmarkRoute(b, "/health") }

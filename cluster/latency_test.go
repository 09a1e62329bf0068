package cluster

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/latency"
)

// latencyRequests and latencyHandlerTime are what the "latency" helper
// serves: that many requests, each taking at least that long.
const (
	latencyRequests    = 20
	latencyHandlerTime = 2 * time.Millisecond
)

// helperLatency serves latencyRequests requests through CountRequests in
// process, then waits for its stdin to close.
func helperLatency() {
	h := CountRequests(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		time.Sleep(latencyHandlerTime) // the handler's own work, not synchronisation
	}))
	for range latencyRequests {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	fmt.Println("served")
	io.Copy(io.Discard, os.Stdin)
}

// helperServed reports latencyRequests requests with RequestServed, as a
// server that is not net/http does, then waits for its stdin to close.
func helperServed() {
	for range latencyRequests {
		RequestServed(latencyHandlerTime)
	}
	fmt.Println("served")
	io.Copy(io.Discard, os.Stdin)
}

// A worker offered FeatureLatency sends its histogram in every heartbeat,
// whether CountRequests or RequestServed recorded it; one that was not (an
// older supervisor) sends the old, shorter frame, which such a supervisor
// requires.
func TestHeartbeatCarriesLatency(t *testing.T) {
	for _, tc := range []struct {
		helper string
		offer  ipc.Features
	}{{"latency", ipc.FeatureLatency | ipc.FeatureOutcomes}, {"latency", ipc.FeatureLatency}, {"latency", 0}, {"served", ipc.FeatureLatency}, {"served", 0}} {
		offer := tc.offer
		t.Run(tc.helper+"/"+offer.String(), func(t *testing.T) {
			handoff, remote, err := ipc.Pair()
			if err != nil {
				t.Fatal(err)
			}
			defer handoff.Close()
			ctl, out, _ := runWorker(t, tc.helper, ModeRR, remote, ipc.EnvFeatures+"="+strconv.Itoa(int(offer)))
			remote.Close()
			if line, err := out.ReadString('\n'); line != "served\n" {
				t.Fatalf("helper: %q, %v", line, err)
			}
			hb := nextBeat(t, ctl, latencyRequests)
			if offer == 0 {
				if hb.Latency != nil {
					t.Fatalf("heartbeat carries latency though the supervisor offered none: %+v", hb.Latency)
				}
				return
			}
			if hb.Latency == nil {
				t.Fatal("heartbeat without latency")
			}
			if have := hb.Latency.Total(); have != latencyRequests {
				t.Fatalf("histogram counts %d requests, want %d", have, latencyRequests)
			}
			switch {
			case offer&ipc.FeatureOutcomes == 0 && hb.Outcomes != nil:
				t.Fatalf("heartbeat carries outcomes though the supervisor offered none: %v", *hb.Outcomes)
			case offer&ipc.FeatureOutcomes != 0 && (hb.Outcomes == nil || hb.Outcomes[latency.ClassOK] != latencyRequests):
				t.Fatalf("outcomes %v, want %d requests of class 2xx", hb.Outcomes, latencyRequests)
			}
			if p50 := hb.Latency.Quantile(0.5); p50 < latencyHandlerTime {
				t.Fatalf("p50 %v, want at least the handler's %v", p50, latencyHandlerTime)
			}
			if hb.Latency.Sum < latencyRequests*latencyHandlerTime {
				t.Fatalf("sum %v, want at least %v", hb.Latency.Sum, latencyRequests*latencyHandlerTime)
			}
		})
	}
}

// nextBeat returns the first heartbeat on ctl that counts at least
// requests, within a few heartbeat intervals.
func nextBeat(t *testing.T, ctl *ipc.Channel, requests uint64) ipc.Heartbeat {
	t.Helper()
	buf := make([]byte, ipc.MaxFrame)
	deadline := time.Now().Add(5 * HeartbeatInterval)
	for time.Now().Before(deadline) {
		ctl.SetReadDeadline(deadline)
		f, _, err := ctl.Recv(buf, nil)
		if err != nil {
			t.Fatalf("no heartbeat counting %d requests: %v", requests, err)
		}
		if f.Type == ipc.TypeHeartbeat {
			if hb := f.Heartbeat(); hb.Requests >= requests {
				return hb
			}
		}
	}
	t.Fatalf("no heartbeat counting %d requests within %v", requests, 5*HeartbeatInterval)
	return ipc.Heartbeat{}
}

// BenchmarkCountRequests measures what CountRequests adds to a request:
// the counter alone (the worker was not offered FeatureLatency), with the
// latency histogram, and with the outcomes (status classes) too. The
// handler answers 200 with a body, as a handler does, into a writer that
// discards it.
func BenchmarkCountRequests(b *testing.B) {
	ok := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.WriteHeader(http.StatusOK)
		rw.Write(benchBody)
	})
	req := httptest.NewRequest("GET", "/", nil)
	for _, tc := range []struct {
		name string
		w    *worker
	}{
		{"none", nil},
		{"count", &worker{}},
		{"count+latency", &worker{latency: new(latency.Recorder)}},
		{"count+latency+outcomes", &worker{latency: new(latency.Recorder), outcomes: new(latency.OutcomeRecorder)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := http.Handler(ok)
			if tc.w != nil {
				h = tc.w.countRequests(ok)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rw := discardWriter{}
				for pb.Next() {
					h.ServeHTTP(rw, req)
				}
			})
		})
	}
}

var benchBody = []byte("ok\n")

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return nil }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// A handler that panics (http.ErrAbortHandler, as httputil.ReverseProxy
// does when the client goes away) is counted in the latency histogram as
// it is in the requests: those are often the slow ones, and a histogram
// without them understates the tail.
func TestCountRequestsPanicked(t *testing.T) {
	w := &worker{latency: new(latency.Recorder)}
	h := w.countRequests(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	func() {
		defer func() {
			if r := recover(); r != http.ErrAbortHandler {
				t.Errorf("panic %v, want it to go on to net/http", r)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
	snap := w.latency.Snapshot()
	if n, total := w.requests.Load(), snap.Total(); n != 1 || total != 1 {
		t.Fatalf("%d requests and %d latencies recorded, want 1 and 1", n, total)
	}
}

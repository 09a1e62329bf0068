package e2e

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// The fasthttp worker (examples/fasthttp, package fastcluster, each its own
// module) under the supervisor, in every mode: what a net/http worker of
// package cluster is tested for here, the same checks.

// buildFastHTTPWorker builds examples/fasthttp with -race (or finds it in
// proctest's cache). It is another module: go build runs in its
// directory, which needs fasthttp in the module cache or the proxy.
func buildFastHTTPWorker(t *testing.T) string {
	t.Helper()
	bin, err := proctest.Build("./examples/fasthttp", "-race")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestFastHTTPWorker: in every mode, two fasthttp workers share /pid,
// report their requests and latency, lose no request but those inside a
// worker killed with -9, reload under load with no failed request, and on
// SIGTERM finish the request in flight and exit 0.
func TestFastHTTPWorker(t *testing.T) {
	bin := buildFastHTTPWorker(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode, "-grace", "10s", "--", bin)
			checkLatencyReported(t, s) // first: its requests alone in the workers' latency
			checkStatusClasses(t, s)
			if mode == "rr" {
				checkAlternation(t, s)
			} else {
				checkBothServe(t, s)
			}
			checkKillUnderLoad(t, s)
			checkReloadUnderLoad(t, s)
			s.stopDuringRequest(1000)
		})
	}
}

// TestFastHTTPWorkerRecycles: -max-requests recycles fasthttp workers
// under load with no failed request, in every mode.
func TestFastHTTPWorkerRecycles(t *testing.T) {
	bin := buildFastHTTPWorker(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			checkRecycles(t, startReady(t, "-workers", "2", "-mode", mode, "-max-requests", "100",
				"-max-requests-jitter", "20", "-grace", "10s", "--", bin))
		})
	}
}

// TestFastHTTPWorkerHang: a fasthttp worker that stops sending heartbeats
// is dumped (SIGQUIT: the Go runtime prints its goroutines) and replaced.
func TestFastHTTPWorkerHang(t *testing.T) {
	bin := buildFastHTTPWorker(t)
	checkHangDump(t, startReady(t, "-workers", "2", "-hang-timeout", "2s", "-worker-output", "capture", "--", bin))
}

// checkBothServe sends 100 requests for /pid, each on a new connection,
// from 4 clients at once, and checks that each of s's two workers answered
// at least 10 of them: in shared and reuseport mode the kernel picks.
func checkBothServe(t *testing.T, s *sup) {
	t.Helper()
	var mu sync.Mutex
	count := map[int]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				pid, err := s.pid()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				count[pid]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	kids := s.Children()
	if len(count) != 2 {
		t.Fatalf("/pid answered by %v, want the two workers %v", count, kids)
	}
	for pid, n := range count {
		if n < 10 {
			t.Fatalf("/pid answers per pid %v: want at least 10 each", count)
		}
		if !slices.Contains(kids, pid) {
			t.Fatalf("pid %d answered but is not a worker (children %v)", pid, kids)
		}
	}
}

// checkLatencyReported: while requests that each take 10ms go on, ctl
// status counts them, and the median latency of a worker that served them
// is at least 6ms (the histogram's buckets around 10ms are 6–10 and
// 10–15ms; a worker that timed something else would report about 0.1ms).
// ctl status has both only from the workers' heartbeats, and the median
// over the last few seconds only, hence requests before each look. In
// shared mode the kernel may give all the requests to one worker.
func checkLatencyReported(t *testing.T, s *sup) {
	t.Helper()
	// Generous: on a loaded machine a round of requests and ctl status
	// takes seconds with race-built binaries.
	proctest.Eventually(t, 30*time.Second, "requests in the workers' status, and a p50 ≥ 6ms", func() bool {
		for range 5 {
			if code, _, err := s.get("/sleep?ms=10"); err != nil || code != 200 {
				t.Fatalf("/sleep?ms=10: %d %v", code, err)
			}
		}
		for _, w := range s.status().Workers {
			if w.Requests > 0 && w.P50S >= 0.006 {
				return true
			}
		}
		return false
	})
}

// checkStatusClasses: a fasthttp worker reports its answers by status
// class, as a net/http one does, for a canary reload's error gate: after
// 404s and 200s, ctl status shows both classes for a worker.
func checkStatusClasses(t *testing.T, s *sup) {
	t.Helper()
	proctest.Eventually(t, 30*time.Second, "2xx and 4xx in a worker's status classes", func() bool {
		for range 4 {
			if code, _, err := s.get("/no-such-route"); err != nil || code != 404 {
				t.Fatalf("/no-such-route: %d %v", code, err)
			}
		}
		for _, w := range s.status().Workers {
			if w.StatusClasses["2xx"] > 0 && w.StatusClasses["4xx"] > 0 {
				return true
			}
		}
		return false
	})
}

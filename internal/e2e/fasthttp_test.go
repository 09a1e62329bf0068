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

// checkLatencyReported: after requests that each take 5ms, ctl status
// shows for each worker the requests it served, and a median latency of at
// least 5ms for one that served them (in shared mode the kernel may give
// them all to one), which it has only from the workers' heartbeats.
func checkLatencyReported(t *testing.T, s *sup) {
	t.Helper()
	for range 20 {
		if code, _, err := s.get("/sleep?ms=5"); err != nil || code != 200 {
			t.Fatalf("/sleep?ms=5: %d %v", code, err)
		}
	}
	proctest.Eventually(t, 5*time.Second, "requests in every worker's status, and a p50 ≥ 5ms", func() bool {
		st := s.status()
		slow := false
		for _, w := range st.Workers {
			if w.Requests == 0 {
				return false
			}
			slow = slow || w.P50S >= 0.005
		}
		return slow && len(st.Workers) == 2
	})
}

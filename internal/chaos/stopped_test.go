package chaos

import (
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestStoppedWorker SIGSTOPs one of two workers in rr mode under
// new-connection load: the supervisor hands connections over, so a stopped
// worker must not hold any request longer than about a second.
func TestStoppedWorker(t *testing.T) {
	const mode, workers = "rr", 2
	const bound = 1500 * time.Millisecond // "about a second"
	s := start(t, opts{mode: mode, workers: workers})
	l := startLoad(s.addr, loadSpec{fresh: 4, every: 20 * time.Millisecond, d: 60 * time.Second})
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	pid := keys(s.workers())[0]
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			syscall.Kill(pid, syscall.SIGCONT)
			resumed = true
		}
	}
	defer resume() // a failed test must not leave it stopped
	stopped := time.Now()
	pace(stopped, pick(3*time.Second, 10*time.Second)) // load runs against the stopped worker
	// Resume the worker, so that what it holds finishes (late), then stop
	// the load.
	stoppedFor := time.Since(stopped)
	resume()
	rs := l.finish()
	sum := summarize(rs)
	over := 0
	for _, r := range rs {
		if r.took > bound {
			over++
		}
	}
	figure(t, "stopped", mode, "stopped_for", stoppedFor, "requests", sum.total, "failed", sum.failed,
		"over_1.5s", over, "hung", sum.hung, "max_latency", sum.max, "p99", sum.p99)
	if sum.max > bound {
		t.Errorf("%d of %d requests waited more than %s behind the stopped worker (max %s, %d hung past %s; %v)",
			over, sum.total, bound, sum.max, sum.hung, reqDeadline, sum.errs)
	}
	s.waitSettled(workers, 10*time.Second)
	s.stop()
}

package chaos

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// Leak bounds: what the supervisor may keep after the churn.
const (
	leakFDs        = 2
	leakGoroutines = 3
	leakRSSKiB     = 6 << 10 // over both rounds: the heap grows to its working size once
	leakRSSRound   = 2 << 10 // in the second round: steady state
)

// TestLeaks churns the supervisor — thousands of connections, kills, a
// reload and a scale round trip — and checks that its descriptors and
// goroutines return to their baseline and its RSS barely grows.
func TestLeaks(t *testing.T) {
	eachMode(t, leaks)
}

func leaks(t *testing.T, mode string) {
	const workers, extra = 2, 2
	conns := pick(1000, 5000)
	s := start(t, opts{mode: mode, workers: workers, args: []string{"-max-crashes", "1000"}})
	// Warm up, so that what the first requests allocate once is in the
	// baseline.
	if failed := connections(s.addr, 200); failed > 0 {
		t.Fatalf("%d of 200 warm-up requests failed", failed)
	}
	base := s.usage()
	// Two rounds: the first may keep what the design keeps, the second
	// must keep nothing more.
	r1 := s.churn(conns, workers, extra, base)
	r2 := s.churn(conns, workers, extra, r1)
	// Nothing is kept by design: in reuseport mode a slot scaled away has
	// its socket drained and closed too (after a quiet period, which churn
	// waits out).
	const keptFDs, keptG = 0, 0
	figure(t, "leaks", mode, "connections", 4*conns+200, "failed", r1.failed+r2.failed, "kills", 4,
		"reloads", 2, "scale_round_trips", 2,
		"fds", fmt.Sprintf("%d/%d/%d", base.fds, r1.fds, r2.fds),
		"goroutines", fmt.Sprintf("%d/%d/%d", base.goroutines, r1.goroutines, r2.goroutines),
		"rss_kib", fmt.Sprintf("%d/%d/%d", base.rssKiB, r1.rssKiB, r2.rssKiB))
	if r1.fds > base.fds+keptFDs+leakFDs || r1.goroutines > base.goroutines+keptG+leakGoroutines {
		t.Errorf("round 1 not back to baseline: descriptors %d -> %d (allowed +%d), goroutines %d -> %d (allowed +%d)",
			base.fds, r1.fds, keptFDs+leakFDs, base.goroutines, r1.goroutines, keptG+leakGoroutines)
	}
	if r2.fds > r1.fds+leakFDs || r2.goroutines > r1.goroutines+leakGoroutines {
		t.Errorf("round 2 grew again: descriptors %d -> %d, goroutines %d -> %d", r1.fds, r2.fds, r1.goroutines, r2.goroutines)
	}
	if g := r2.rssKiB - base.rssKiB; g > leakRSSKiB {
		t.Errorf("RSS grew by %d KiB over two rounds, more than %d KiB", g, leakRSSKiB)
	}
	if g := r2.rssKiB - r1.rssKiB; g > leakRSSRound {
		t.Errorf("RSS grew by %d KiB in the second round, more than %d KiB", g, leakRSSRound)
	}
	if r1.failed+r2.failed > 0 {
		t.Errorf("%d requests failed outside the kills", r1.failed+r2.failed)
	}
	s.stop()
}

// usage is what the supervisor holds at one moment.
type usage struct {
	fds, goroutines, rssKiB int
	failed                  int // requests of the round that failed
}

func (s *sup) usage() usage {
	return usage{fds: s.FDs(), goroutines: s.goroutines(), rssKiB: s.rssKiB()}
}

// churn runs one round — conns connections, two kills, a reload, a scale
// to workers+extra and back, conns connections again — and returns the
// usage once descriptors and goroutines are back within the leak bounds of
// from (they are released asynchronously: a retired reuseport socket after
// its quiet period), or as they are after 5s.
func (s *sup) churn(conns, workers, extra int, from usage) usage {
	t := s.t
	t.Helper()
	failed := connections(s.addr, conns)
	for i := 0; i < 2; i++ {
		pid := keys(s.workers())[0]
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		proctest.WaitGone(t, pid, 2*time.Second)
		s.waitSettled(workers, 15*time.Second)
	}
	if err := s.call(control.Request{Cmd: control.CmdReload}, 30*time.Second); err != nil {
		t.Fatalf("reload: %v", err)
	}
	for _, n := range []int{workers + extra, workers} {
		if err := s.call(control.Request{Cmd: control.CmdScale, N: n}, 30*time.Second); err != nil {
			t.Fatalf("scale %d: %v", n, err)
		}
	}
	s.waitSettled(workers, 15*time.Second)
	failed += connections(s.addr, conns)
	u := s.usage()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); u = s.usage() {
		if u.fds <= from.fds+leakFDs && u.goroutines <= from.goroutines+leakGoroutines {
			break
		}
		time.Sleep(100 * time.Millisecond) // a sampling interval, within the deadline
	}
	u.failed = failed
	return u
}

// connections makes n requests, each on a new connection, 8 at a time,
// and returns how many failed.
func connections(addr string, n int) int {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := get(addr, "/pid", reqDeadline); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

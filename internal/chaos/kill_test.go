package chaos

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// minUptime mirrors the supervisor's: a worker killed younger died young
// and its slot's respawn is delayed. The loop kills only older workers, so
// it measures lost requests, not the crash backoff.
const minUptime = 2100 * time.Millisecond

// TestKillLoop kill -9s random workers under mixed load: no request hangs,
// and only requests in flight at a kill may fail.
func TestKillLoop(t *testing.T) {
	eachMode(t, killLoop)
}

func killLoop(t *testing.T, mode string) { killLoopOf(t, "kill", mode, nil) }

// killLoopOf is the kill loop of a supervisor running command (nil: the
// demo worker) in mode, reported as scenario.
func killLoopOf(t *testing.T, scenario, mode string, command []string) {
	const workers = 3
	s := start(t, opts{mode: mode, workers: workers, args: []string{"-max-crashes", "1000"}, command: command})
	k := killUnderLoad(t, s.addr, func() int { return pickOld(t, s, 10*time.Second) },
		func() { s.waitSettled(workers, 15*time.Second) })
	k.report(t, scenario, mode)
	if k.stray > 0 {
		t.Errorf("%d requests failed that were not in flight at any kill (errors: %v)", k.stray, k.sum.errs)
	}
	s.stop()
}

// kills is what a kill loop measured.
type kills struct {
	n            int
	sum          summary
	worst, total int // failed requests in flight at one kill: the most, and all
	stray        int // failed requests in flight at no kill
}

// killUnderLoad starts the mixed load on addr, kill -9s the worker victim
// picks, kills times (pick(3, 30)) at most every 300ms, waits for settle,
// and attributes the failed requests to the kills. It fails the test if
// the load does not start, if a request hangs, or if too few succeed.
func killUnderLoad(t *testing.T, addr string, victim func() int, settle func()) kills {
	t.Helper()
	k := kills{n: pick(3, 30)}
	every := 300 * time.Millisecond
	l := startLoad(addr, mixed(time.Duration(k.n)*time.Second+30*time.Second))
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	var killed []time.Time
	for i := 0; i < k.n; i++ {
		pid := victim()
		killed = append(killed, time.Now())
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		proctest.WaitGone(t, pid, 2*time.Second)
		pace(killed[i], every)
	}
	settle()
	// Let requests that began around the last kill finish.
	pace(time.Now(), time.Second)
	rs := l.finish()

	var perKill []int
	perKill, k.stray = attribute(rs, killed)
	k.sum = summarize(rs)
	for _, n := range perKill {
		k.worst, k.total = max(k.worst, n), k.total+n
	}
	if k.sum.hung > 0 {
		t.Errorf("%d requests took %s or more (hung)", k.sum.hung, reqDeadline)
	}
	if k.sum.total-k.sum.failed < k.n*20 {
		t.Errorf("only %d of %d requests succeeded", k.sum.total-k.sum.failed, k.sum.total)
	}
	return k
}

// report logs k's figures.
func (k kills) report(t *testing.T, scenario, mode string) {
	t.Helper()
	figure(t, scenario, mode, "kills", k.n, "requests", k.sum.total, "failed", k.sum.failed,
		"failed_per_kill_max", k.worst, "failed_per_kill_mean", float64(k.total)/float64(k.n),
		"stray_failures", k.stray, "hung", k.sum.hung, "max_latency", k.sum.max, "p99", k.sum.p99)
}

// pickOld returns a random ready worker older than minUptime, waiting up
// to d for one.
func pickOld(t *testing.T, s *sup, d time.Duration) int {
	t.Helper()
	var old []int
	if !proctest.Poll(d, func() bool {
		old = old[:0]
		for pid, up := range s.workers() {
			if up >= minUptime.Seconds() {
				old = append(old, pid)
			}
		}
		return len(old) > 0
	}) {
		t.Fatalf("no ready worker older than %s within %s", minUptime, d)
	}
	return old[rand.IntN(len(old))]
}

// pace waits until since+d: it spaces faults out (a rate, not a
// synchronisation).
func pace(since time.Time, d time.Duration) {
	if w := time.Until(since.Add(d)); w > 0 {
		time.Sleep(w)
	}
}

// attribute counts the failed requests in flight at each kill (started
// before it, ended after it), and the failures in flight at none.
func attribute(rs []result, kills []time.Time) (perKill []int, stray int) {
	perKill = make([]int, len(kills))
	for _, r := range rs {
		if r.err == nil {
			continue
		}
		hit := false
		for i, k := range kills {
			if !r.start.After(k) && !r.end().Before(k) {
				perKill[i]++
				hit = true
				break
			}
		}
		if !hit {
			stray++
		}
	}
	return perKill, stray
}

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

func killLoop(t *testing.T, mode string) {
	const workers = 3
	kills := pick(3, 30)
	every := 300 * time.Millisecond
	s := start(t, opts{mode: mode, workers: workers, args: []string{"-max-crashes", "1000"}})
	l := startLoad(s.addr, mixed(time.Duration(kills)*time.Second+30*time.Second))
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	var killed []time.Time
	for i := 0; i < kills; i++ {
		pid := pickOld(t, s, 10*time.Second)
		killed = append(killed, time.Now())
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		proctest.WaitGone(t, pid, 2*time.Second)
		pace(killed[i], every)
	}
	s.waitSettled(workers, 15*time.Second)
	// Let requests that began around the last kill finish.
	pace(time.Now(), time.Second)
	rs := l.finish()

	perKill, stray := attribute(rs, killed)
	sum := summarize(rs)
	worst, total := 0, 0
	for _, n := range perKill {
		worst, total = max(worst, n), total+n
	}
	figure(t, "kill", mode, "kills", kills, "requests", sum.total, "failed", sum.failed,
		"failed_per_kill_max", worst, "failed_per_kill_mean", float64(total)/float64(kills),
		"stray_failures", stray, "hung", sum.hung, "max_latency", sum.max, "p99", sum.p99)
	if sum.hung > 0 {
		t.Errorf("%d requests took %s or more (hung)", sum.hung, reqDeadline)
	}
	if stray > 0 {
		t.Errorf("%d requests failed that were not in flight at any kill (errors: %v)", stray, sum.errs)
	}
	if sum.total-sum.failed < kills*20 {
		t.Errorf("only %d of %d requests succeeded", sum.total-sum.failed, sum.total)
	}
	s.stop()
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

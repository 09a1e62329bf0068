package chaos

import (
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// TestReloadScaleStorm sends 10 SIGHUPs 150ms apart, then bursts of TTIN
// and TTOU, under load: no request fails, and the supervisor settles at N
// ready workers of one generation with no extra child.
func TestReloadScaleStorm(t *testing.T) {
	eachMode(t, storm)
}

func storm(t *testing.T, mode string) {
	const workers = 3
	rounds := pick(1, 3)
	burst := pick(2, 4)
	s := start(t, opts{mode: mode, workers: workers})
	l := startLoad(s.addr, mixed(time.Duration(rounds)*30*time.Second))
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	gen0 := s.generation()
	maxKids := 0
	sample := func() { maxKids = max(maxKids, len(procfs.Children(s.PID()))) }
	var settle time.Duration
	for r := 0; r < rounds; r++ {
		for i := 0; i < 10; i++ {
			t0 := time.Now()
			s.Signal(syscall.SIGHUP)
			sample()
			pace(t0, 150*time.Millisecond)
		}
		// Each burst must take effect in full: N+burst workers, then N.
		for _, step := range []struct {
			sig  syscall.Signal
			want int
		}{{syscall.SIGTTIN, workers + burst}, {syscall.SIGTTOU, workers}} {
			for i := 0; i < burst; i++ {
				t0 := time.Now()
				s.Signal(step.sig)
				sample()
				pace(t0, 20*time.Millisecond)
			}
			settle = max(settle, s.waitSettled(step.want, 60*time.Second))
		}
	}
	pace(time.Now(), 500*time.Millisecond) // requests around the settling point end
	sum := summarize(l.finish())
	gen := s.generation()
	figure(t, "storm", mode, "sighups", 10*rounds, "scale_signals", 2*burst*rounds, "requests", sum.total,
		"failed", sum.failed, "hung", sum.hung, "max_latency", sum.max, "generations", gen-gen0,
		"max_children", maxKids, "settle", settle, "reloads_done", s.count(`"msg":"reload done"`))
	if sum.failed > 0 {
		t.Errorf("%d of %d requests failed during the storm (errors: %v)", sum.failed, sum.total, sum.errs)
	}
	if sum.hung > 0 {
		t.Errorf("%d requests hung", sum.hung)
	}
	if gen == gen0 {
		t.Errorf("generation still %d after %d SIGHUPs: no reload happened", gen, 10*rounds)
	}
	s.stop()
}

// generation returns the supervisor's current generation.
func (s *sup) generation() int {
	s.t.Helper()
	st, _, err := s.status(2 * time.Second)
	if err != nil {
		s.t.Fatalf("status: %v", err)
	}
	return st.Generation
}

package chaos

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// statusBound is how long `ctl status` may take while an upgrade is being
// checked or rehearsed; machineStall, how long an idle supervisor's may
// take at the same moment for the slow answer to count (above it, the
// machine stalled both).
const statusBound, machineStall = 100 * time.Millisecond, 50 * time.Millisecond

// TestUpgradeHangingRelease: a release that hangs where the old image
// waits for it, in its rehearsal (and, in the long run, in its
// -check-upgrade), under a load whose requests give up after 1s. Both run
// beside the owner goroutine, which keeps accepting, handing off and
// answering: no request fails, `ctl status` answers within statusBound
// throughout, and after the 5s bound the upgrade is refused, saying so,
// and the old image serves on with the same workers. (The rehearsal ran
// on the owner goroutine: rr stopped accepting for its 5s and status
// waited as long.)
func TestUpgradeHangingRelease(t *testing.T) {
	check := `[ "$1" = -check-upgrade ] && exec ` + supervisorBin + ` "$@"` + "\n"
	hangs := []struct{ name, script string }{{"hangs-in-rehearsal", check + "exec sleep 60\n"}}
	if long { // 5s each
		hangs = append(hangs, struct{ name, script string }{"hangs-in-check", "exec sleep 60\n"})
	}
	idle := start(t, opts{mode: "rr", workers: 1}) // the machine's own stalls
	defer idle.stop()
	for _, mode := range pick([]string{"rr"}, modes) {
		for _, h := range hangs {
			t.Run(mode+"/"+h.name, func(t *testing.T) { hangingRelease(t, mode, writeRelease(t, h.name, h.script), idle) })
		}
	}
}

func hangingRelease(t *testing.T, mode, rel string, idle *sup) {
	s := start(t, opts{mode: mode, workers: 2})
	before := s.workers()
	spec := mixed(time.Minute)
	spec.deadline = time.Second
	l := startLoad(s.addr, spec)
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	type answer struct {
		resp control.Response
		err  error
	}
	answered := make(chan answer, 1)
	t0 := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdUpgrade, Path: rel})
		answered <- answer{resp, err}
	}()
	st := watchBoth(s, idle, answered)
	took := time.Since(t0)
	switch a := st.answer; {
	case a.err != nil:
		t.Fatalf("ctl upgrade: %v", a.err)
	case a.resp.OK || !strings.Contains(a.resp.Error, "no answer within 5s"):
		t.Errorf("ctl upgrade: %+v, want refused with %q", a.resp, "no answer within 5s")
	case took < 5*time.Second:
		t.Errorf("refused after %v, before the 5s bound", took)
	}
	if st.slow > 0 || st.worst >= time.Second {
		t.Errorf("ctl status during the upgrade: %d of %d calls over %v while an idle supervisor answered within %v; slowest %v",
			st.slow, st.calls, statusBound, machineStall, st.worst)
	}
	sum := stillServing(t, s, l, before)
	if sum.failed > 0 {
		t.Errorf("%d of %d requests failed (1s deadline): %v; %s", sum.failed, sum.total, sum.errs, sum.failWindow())
	}
	figure(t, "upgrade-hanging-release", mode, "release", rel[strings.LastIndex(rel, "/")+1:], "refused_after", took,
		"requests", sum.total, "failed", sum.failed, "status_calls", st.calls, "status_slowest", st.worst, "status_slow", st.slow)
	s.stop()
}

// TestUpgradeStopDuringRehearsal: SIGTERM while a release hangs in its
// rehearsal. The stop wins at once, not after the rehearsal's 5s bound:
// the rehearsal is killed and reaped, the upgrade is answered that the
// supervisor is stopping, and it exits 0 with nothing left behind.
func TestUpgradeStopDuringRehearsal(t *testing.T) {
	s := start(t, opts{mode: "rr", workers: 2})
	marker := "300." + strconv.Itoa(os.Getpid()) // sleep's argument, to find it by
	rel := writeRelease(t, "hangs-in-rehearsal",
		`[ "$1" = -check-upgrade ] && exec `+supervisorBin+` "$@"`+"\n"+`exec sleep `+marker+"\n")
	answered := make(chan control.Response, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdUpgrade, Path: rel})
		if err != nil {
			resp.Error = err.Error()
		}
		answered <- resp
	}()
	hung := func() []int { return withArg(marker) }
	if !proctest.Poll(5*time.Second, func() bool { return len(hung()) > 0 }) {
		t.Fatal("the release's rehearsal did not start")
	}
	t0 := time.Now()
	s.Signal(syscall.SIGTERM)
	select {
	case <-s.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15s after SIGTERM")
	}
	took := time.Since(t0)
	if code := s.ExitCode(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if took >= 4*time.Second {
		t.Errorf("stopped %v after SIGTERM: it waited for the rehearsal's bound", took)
	}
	if resp := <-answered; resp.OK || !strings.Contains(resp.Error, "stopping") {
		t.Errorf("ctl upgrade: %+v, want refused: the supervisor is stopping", resp)
	}
	if left := hung(); len(left) > 0 {
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Errorf("the rehearsal %v outlived the supervisor", left)
	}
	figure(t, "upgrade-stop-during-rehearsal", "rr", "stopped_after", took)
}

// withArg returns the pids of the processes with arg on their command line.
func withArg(arg string) []int {
	var out []int
	pids, _ := procfs.PIDs()
	for _, pid := range pids {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && strings.Contains(string(b), "\x00"+arg) {
			out = append(out, pid)
		}
	}
	return out
}

// watched is what watchBoth saw.
type watched[T any] struct {
	answer      T
	calls, slow int           // status calls, and those over statusBound while idle's was quick
	worst       time.Duration // the slowest status answer
}

// watchBoth asks s and idle for their status at the same moments, every
// 20ms, until done delivers (at most a minute), and returns what it
// delivered with the figures.
func watchBoth[T any](s, idle *sup, done <-chan T) watched[T] {
	var w watched[T]
	tick := time.NewTicker(20 * time.Millisecond) // pacing, not synchronisation
	defer tick.Stop()
	for end := time.Now().Add(time.Minute); time.Now().Before(end); {
		select {
		case w.answer = <-done:
			return w
		case <-tick.C:
		}
		own := make(chan time.Duration, 1)
		go func() {
			_, took, _ := idle.status(2 * time.Second)
			own <- took
		}()
		_, took, err := s.status(10 * time.Second)
		idleTook := <-own
		w.calls++
		w.worst = max(w.worst, took)
		if err != nil || (took > statusBound && idleTook <= machineStall) {
			w.slow++
		}
	}
	w.answer = <-done
	return w
}

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// A signal that arrives while the supervisor re-executes itself is
// handled by the new image as at any other time: a build that sends itself
// signals on the thread that execs, once they are held and just before
// its execve (signalsAtExec), where a Go executable loses every one of
// them (internal/execsignal).

// atExecBin builds the supervisor (as it ships) that sends itself sigs at
// its first execve, with the worker beside it.
func atExecBin(t *testing.T, sigs ...syscall.Signal) string {
	t.Helper()
	const pkg = "github.com/prefork/prefork/internal/supervisor"
	var n []string
	for _, s := range sigs {
		n = append(n, strconv.Itoa(int(s)))
	}
	path, err := proctest.Build("./cmd/supervisor", "-race", "-ldflags=-X "+pkg+".signalsAtExec="+strings.Join(n, ","))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "supervisor")
	copyFile(t, path, bin, 0o755)
	if err := os.Symlink(workerBin, filepath.Join(filepath.Dir(bin), "worker")); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestUpgradeTermAtExec: a SIGTERM sent while the supervisor execs stops
// the new image gracefully, exit 0, rather than being lost or fatal.
func TestUpgradeTermAtExec(t *testing.T) {
	s := startBin(t, atExecBin(t, syscall.SIGTERM), "-workers", "1")
	s.Signal(syscall.SIGUSR2)
	if code := s.WaitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after a SIGTERM at the execve, want 0 (a graceful stop)", code)
	}
	out := s.Out.String()
	for _, want := range []string{`"msg":"upgraded in place"`, `"msg":"stopping","signal":"terminated"`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in the log", want)
		}
	}
}

// TestUpgradeSignalsAtExec: SIGHUP, SIGUSR2 and SIGTTIN sent while the
// supervisor execs reload, upgrade again and add a worker in the new
// image; and every worker, the ones forked after the upgrade included,
// starts with none of the supervisor's signals blocked (children inherit
// the mask of the thread that forks them, which held them for the execve).
func TestUpgradeSignalsAtExec(t *testing.T) {
	s := startBin(t, atExecBin(t, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTTIN), "-workers", "1")
	s.Signal(syscall.SIGUSR2)
	count := func(msg string) int { return strings.Count(s.Out.String(), `"msg":"`+msg+`"`) }
	var st upgradeStatus
	ok := proctest.Poll(20*time.Second, func() bool {
		out, code := s.ctl("-json", "status")
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return false
		}
		ready := 0
		for _, w := range st.Workers {
			if w.State == "ready" {
				ready++
			}
		}
		return count("reload requested") == 1 && count("upgrade requested") == 2 && ready == 2 && len(st.Workers) == 2
	})
	if !ok {
		t.Fatalf("want a reload, two upgrade requests and two ready workers; have %d, %d and %+v",
			count("reload requested"), count("upgrade requested"), st.Workers)
	}
	if st.Upgrades < 1 {
		t.Errorf("upgrades %d, want at least 1", st.Upgrades)
	}
	for _, w := range st.Workers {
		blocked, err := blockedInEveryThread(w.PID)
		if err != nil {
			t.Fatal(err)
		}
		if b := blocked & heldSignals; b != 0 {
			t.Errorf("worker %d (pid %d) has signals blocked in every thread: mask %#x", w.Slot, w.PID, b)
		}
	}
	s.Signal(syscall.SIGTERM)
	if code := s.WaitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
}

// heldSignals is the mask of the signals the supervisor holds across an
// upgrade (execsignal.Signals).
const heldSignals = 1<<(syscall.SIGTERM-1) | 1<<(syscall.SIGINT-1) | 1<<(syscall.SIGHUP-1) |
	1<<(syscall.SIGTTIN-1) | 1<<(syscall.SIGTTOU-1) | 1<<(syscall.SIGUSR2-1)

// blockedInEveryThread is the set of signals every thread of pid blocks:
// a process-directed signal in it is never delivered.
func blockedInEveryThread(pid int) (uint64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	all := ^uint64(0)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err != nil {
					return 0, err
				}
				all &= m
			}
		}
	}
	return all, nil
}

// TestShippedBuildHoldsSignals: the supervisor the tests run, built as
// make build builds it, is the archive build, which holds its signals
// from its start; a Go executable (no C compiler, or cgo disabled) has a
// window in every upgrade in which a signal is lost or fatal.
func TestShippedBuildHoldsSignals(t *testing.T) {
	out, err := exec.Command(supervisorBin, "-check-upgrade", "-listen", "127.0.0.1:0").CombinedOutput()
	if err != nil {
		t.Fatalf("-check-upgrade: %v: %s", err, out)
	}
	if !strings.Contains(string(out), " signals=held") {
		t.Fatalf("-check-upgrade printed %q: not the archive build (is there a C compiler? see scripts/build-supervisor)", out)
	}
}

// TestUpgradeKillTakesWorkers: after two upgrades, a supervisor killed
// with SIGKILL takes every worker with it, the ones it kept across both
// and the one it forked since: each keeps the Pdeathsig it was started
// with. (That the thread it is tied to, the main thread, the C main's in
// the archive build, does not exit while the supervisor runs, the other
// upgrade tests check: a kept worker would die at the next upgrade.)
func TestUpgradeKillTakesWorkers(t *testing.T) {
	s := startBin(t, supervisorBin, "-workers", "2")
	for n := 1; n <= 2; n++ {
		s.Signal(syscall.SIGUSR2)
		proctest.Eventually(t, 20*time.Second, "the upgrade done", func() bool {
			return strings.Count(s.Out.String(), `"msg":"upgraded in place"`) == n
		})
	}
	s.Signal(syscall.SIGTTIN)
	var pids []int
	proctest.Eventually(t, 20*time.Second, "three workers", func() bool {
		pids = s.Children()
		return len(pids) == 3
	})
	s.Cmd.Process.Signal(syscall.SIGKILL) // the supervisor only: Proc.Kill kills the children too
	proctest.Eventually(t, 10*time.Second, "every worker gone", func() bool {
		for _, pid := range pids {
			if procfs.Alive(pid) {
				return false
			}
		}
		return true
	})
}

package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// writeRelease writes an executable shell script in a test directory.
func writeRelease(t *testing.T, name, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpgradeCheckOrphan: a release whose -check-upgrade leaves a process
// behind. The supervisor is a subreaper, so that process would be
// re-parented to it and live on as one of its children; the check runs in
// a process group of its own, killed once it has answered.
func TestUpgradeCheckOrphan(t *testing.T) {
	s := start(t, opts{mode: "rr", workers: 1})
	marker := "300." + strconv.Itoa(os.Getpid()) // sleep's argument, to find it by
	rel := writeRelease(t, "leaves-orphan",
		`[ "$1" = -check-upgrade ] && { sleep `+marker+` >/dev/null 2>&1 </dev/null & }`+"\n"+
			`exec `+supervisorBin+` "$@"`+"\n")
	if resp := s.upgrade(rel); !resp.OK {
		t.Fatalf("ctl upgrade: %+v", resp)
	}
	orphans := func() []int { return withArg(marker) }
	only := func() bool {
		st, _, err := s.status(2 * time.Second)
		if err != nil {
			return false
		}
		var workers []int
		for _, w := range st.Workers {
			workers = append(workers, w.PID)
		}
		kids := s.Children()
		slices.Sort(kids)
		slices.Sort(workers)
		return slices.Equal(kids, workers) && len(orphans()) == 0
	}
	if !proctest.Poll(5*time.Second, only) {
		left := orphans()
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("the check's orphan %v lives on; supervisor's children %v", left, s.Children())
	}
	s.stop()
}

// TestScaleThenUpgrade: in reuseport mode `ctl scale` answers once the
// removed workers have exited, while their sockets still drain; an upgrade
// asked right after it waits for them instead of being refused.
func TestScaleThenUpgrade(t *testing.T) {
	s := start(t, opts{mode: "reuseport", workers: 3})
	if err := s.call(control.Request{Cmd: control.CmdScale, N: 2}, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	resp := s.upgrade("")
	if !resp.OK {
		t.Fatalf("ctl upgrade right after ctl scale: %s", resp.Error)
	}
	figure(t, "scale-then-upgrade", "reuseport", "upgrade_took", time.Since(t0))
	s.waitSettled(2, 15*time.Second)
	s.stop()
}

// TestUpgradeBrokenRelease: releases broken in each way an operator can
// install one are refused before the execve, which cannot be undone, and
// the running version serves on without a failed request: one that fails
// its check, one that passes it and then exits (the rehearsal catches it),
// one that passes it and then prints something else, one that hangs in
// its rehearsal, one that is not there.
func TestUpgradeBrokenRelease(t *testing.T) {
	for _, mode := range pick([]string{"rr"}, modes) {
		t.Run(mode, func(t *testing.T) { brokenReleases(t, mode) })
	}
}

func brokenReleases(t *testing.T, mode string) {
	check := `[ "$1" = -check-upgrade ] && exec ` + supervisorBin + ` "$@"` + "\n"
	releases := []struct{ name, script, want string }{
		{"fails-check", "echo 'cannot start' >&2\nexit 3\n", "cannot start"},
		{"exits-after-check", check + "exit 1\n", "rehearsal of"},
		{"other-after-check", check + "echo hello\n", "exited without restoring"},
	}
	if long { // 5s each: the rehearsal's bound
		releases = append(releases, struct{ name, script, want string }{"hangs-after-check", check + "exec sleep 60\n", "no answer within"})
	}
	s := start(t, opts{mode: mode, workers: 2})
	before := s.workers()
	l := startLoad(s.addr, mixed(2*time.Minute))
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	for _, r := range releases {
		resp := s.upgrade(writeRelease(t, r.name, r.script))
		if resp.OK || !strings.Contains(resp.Error, r.want) {
			t.Errorf("ctl upgrade %s: %+v, want refused with %q", r.name, resp, r.want)
		}
	}
	if resp := s.upgrade(filepath.Join(t.TempDir(), "missing")); resp.OK || !strings.Contains(resp.Error, "no such file") {
		t.Errorf("ctl upgrade of a missing file: %+v", resp)
	}
	sum := stillServing(t, s, l, before)
	if sum.failed > 0 {
		t.Errorf("%d of %d requests failed: %v", sum.failed, sum.total, sum.errs)
	}
	figure(t, "upgrade-broken-release", mode, "releases", len(releases)+1, "requests", sum.total, "failed", sum.failed)
	s.stop()
}

// stillServing checks that s, whose upgrade was refused, goes on serving
// l with the workers it had before, and returns l's summary.
func stillServing(t *testing.T, s *sup, l *load, before map[int]float64) summary {
	t.Helper()
	served := l.okCount()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= served+50 }) {
		t.Errorf("not serving after the refused upgrade")
	}
	sum := summarize(l.finish())
	after := s.workers()
	if !s.Running() || len(after) != len(before) {
		t.Errorf("after: running %v, workers %v, before %v", s.Running(), keys(after), keys(before))
	}
	for pid := range before {
		if _, ok := after[pid]; !ok {
			t.Errorf("worker %d is gone", pid)
		}
	}
	return sum
}

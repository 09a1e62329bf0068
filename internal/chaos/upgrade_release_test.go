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
	"github.com/prefork/prefork/internal/procfs"
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
	orphans := func() []int {
		var out []int
		pids, _ := procfs.PIDs()
		for _, pid := range pids {
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && strings.Contains(string(b), "\x00"+marker) {
				out = append(out, pid)
			}
		}
		return out
	}
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

package reaper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/procfs"
)

// sweepInterval bounds how long a zombie can wait when its SIGCHLD was
// coalesced with another one (standard signals do not queue) or arrived
// while its exit was not yet visible in /proc.
const sweepInterval = 3 * time.Second

// SetSubreaper marks this process as a child subreaper (PR_SET_CHILD_SUBREAPER,
// Linux 3.4+): orphaned descendants are re-parented to it instead of to PID 1,
// so they show up in Reap. It is process-wide, inherited by no child, and
// needless but harmless when the process already is PID 1.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("reaper: set child subreaper: %w", err)
	}
	return nil
}

// Reap waits for every zombie child of this process whose pid isOwn does not
// claim, and returns the pids it collected. It never waits for a pid for
// which isOwn returns true, and does not wait for a child to exit.
func Reap(isOwn func(pid int) bool) []int {
	var reaped []int
	for _, pid := range zombieChildren() {
		if isOwn(pid) {
			continue
		}
		// A zombie keeps its pid until it is waited for, and nobody but us
		// waits for a pid isOwn disowns, so pid still names the zombie we
		// saw in /proc: it cannot have been recycled into a new worker.
		// The leader of a multithreaded process shows state Z while its
		// other threads are still exiting; wait4 then returns 0, and the
		// SIGCHLD sent once the last thread is gone brings Run back.
		if waitNoHang(pid) {
			reaped = append(reaped, pid)
		}
	}
	return reaped
}

func waitNoHang(pid int) bool {
	var ws unix.WaitStatus
	for {
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && wpid == pid
	}
}

// zombieChildren lists the pids in /proc whose state is Z and whose parent
// is this process.
//
// It scans every /proc/<pid>/stat rather than /proc/self/task/*/children:
// the children files need CONFIG_PROC_CHILDREN, which some kernels (e.g.
// Firecracker guests) lack, and proc(5) calls them unreliable unless every
// child is stopped. Zombies never leave on their own, so a full scan is
// exact; it costs one small read per process, only after a SIGCHLD.
func zombieChildren() []int {
	all, err := procfs.PIDs()
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, pid := range all {
		if pid == self {
			continue
		}
		// An error means the process is gone meanwhile, or not ours to read.
		st, err := procfs.ReadStat(pid)
		if err == nil && st.State == 'Z' && st.PPID == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Run calls Reap at once, on every SIGCHLD and every few seconds until ctx is
// done, and calls onReap (if not nil) for each pid collected. It blocks; run
// it in its own goroutine.
func Run(ctx context.Context, isOwn func(pid int) bool, onReap func(pid int)) {
	// Capacity 1 is enough: SIGCHLD only means "look again", and the
	// runtime drops a signal rather than block when the buffer is full.
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		for _, pid := range Reap(isOwn) {
			if onReap != nil {
				onReap(pid)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sigchld:
		case <-t.C:
		}
	}
}

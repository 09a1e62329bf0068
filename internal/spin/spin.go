package spin

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Thread busy-loops until the calling thread has used d more CPU time.
//
// The thread's CPU clock, not the wall clock: on a CPU shared with other
// threads (a sibling worker, the supervisor) the time this one waits
// preempted is not work, and each request must cost the same CPU whatever
// the load. The goroutine is locked to its thread so that the clock read at
// the end is the same thread's as at the start.
func Thread(d time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, err := ThreadCPU()
	if err != nil {
		return err
	}
	for {
		now, err := ThreadCPU()
		if err != nil {
			return err
		}
		if now-start >= d {
			return nil
		}
	}
}

// ThreadCPU is the CPU time (user and system) the calling thread has used.
func ThreadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("spin: thread cpu clock: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

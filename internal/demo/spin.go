package demo

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// maxSpinUS bounds /spin's us: 100ms of CPU.
const maxSpinUS = 100_000

type spinBody struct {
	SpunUS int `json:"spun_us"`
	PID    int `json:"pid"`
}

// spinHandler spends the query parameter us microseconds of CPU time of
// the thread serving the request, then answers. It gives the benchmarks a
// request of known server cost, whatever else shares the CPU.
func spinHandler(w http.ResponseWriter, r *http.Request) {
	us, ok := intParam(w, r, "us", maxSpinUS)
	if !ok {
		return
	}
	if err := spin(time.Duration(us) * time.Microsecond); err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, spinBody{SpunUS: us, PID: os.Getpid()})
}

// spin busy-loops until the calling thread has used d more CPU time.
//
// The thread's CPU clock, not the wall clock: on a CPU shared with other
// threads (a sibling worker, the supervisor) the time this one waits
// preempted is not work, and each request must cost the same CPU whatever
// the load. The goroutine is locked to its thread so that the clock read at
// the end is the same thread's as at the start.
func spin(d time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, err := threadCPU()
	if err != nil {
		return err
	}
	for {
		now, err := threadCPU()
		if err != nil {
			return err
		}
		if now-start >= d {
			return nil
		}
	}
}

// threadCPU is the CPU time (user and system) the calling thread has used.
func threadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("spin: thread cpu clock: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

package demo

import (
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/spin"
)

func TestSpin(t *testing.T) {
	// serve runs the handler on this goroutine; locked, the thread CPU
	// clock read here is the one the handler spends.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, us := range []int{0, 2000, 20000} {
		target := "/spin?us=" + strconv.Itoa(us)
		var rec *httptest.ResponseRecorder
		cpu, err := spent(func() error { rec = serve(t, target); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if want, have := http.StatusOK, rec.Code; want != have {
			t.Fatalf("GET %s: want status %d, have %d", target, want, have)
		}
		if want, have := "application/json", rec.Header().Get("Content-Type"); want != have {
			t.Errorf("GET %s: want Content-Type %q, have %q", target, want, have)
		}
		if want, have := time.Duration(us)*time.Microsecond, cpu; have < want {
			t.Errorf("GET %s: spent %v of thread CPU time, want at least %v", target, have, want)
		}
		var have spinBody
		decode(t, rec, &have)
		if want := (spinBody{SpunUS: us, PID: os.Getpid()}); want != have {
			t.Errorf("GET %s: want body %+v, have %+v", target, want, have)
		}
	}
}

// TestSpinCPUNotWall runs two spins at once on threads confined to one
// CPU: each gets about half of it, and each must still spend its whole d
// of CPU time (a wall-clock spin would stop after about d/2).
func TestSpinCPUNotWall(t *testing.T) {
	const d = 50 * time.Millisecond
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for !old.IsSet(cpu) {
		cpu++
	}
	var one unix.CPUSet
	one.Set(cpu)
	// pid 0 is the calling thread: affinity is per thread on Linux.
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)

	type result struct {
		spent time.Duration
		err   error
	}
	ready, done := make(chan error, 1), make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			ready <- err
			return
		}
		defer unix.SchedSetaffinity(0, &old)
		ready <- nil
		spent, err := spent(func() error { return spin.Thread(d) })
		done <- result{spent, err}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	have, err := spent(func() error { return spin.Thread(d) })
	if err != nil {
		t.Fatal(err)
	}
	if have < d {
		t.Errorf("spent %v of thread CPU time sharing a CPU, want at least %v", have, d)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.spent < d {
			t.Errorf("second spin: spent %v of thread CPU time sharing a CPU, want at least %v", r.spent, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second spin still running after 10s")
	}
}

// spent is the CPU time the calling thread used running f, which must not
// leave it (the caller has it locked).
func spent(f func() error) (time.Duration, error) {
	before, err := spin.ThreadCPU()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := spin.ThreadCPU()
	if err != nil {
		return 0, err
	}
	return after - before, nil
}

func TestSpinBadParam(t *testing.T) {
	for _, target := range []string{
		"/spin",           // missing
		"/spin?us=",       // empty
		"/spin?us=x",      // not an integer
		"/spin?us=-1",     // negative
		"/spin?us=1.5",    // not an integer
		"/spin?us=100001", // over max
	} {
		checkBadParam(t, target, "us")
	}
}

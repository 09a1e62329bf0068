package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
)

// system is the supervisor's seam to the operating system, as tableflip's
// env struct is: starting a process, signalling it, learning of its exit,
// reading /proc and telling time all go through it. The production
// implementation is osSystem; the state-machine tests use fake processes
// and a clock they advance by hand (fake_test.go).
type system interface {
	// Now is the time on the supervisor's clock.
	Now() time.Time
	// AfterFunc calls f on its own goroutine once d has passed; stop
	// cancels it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
	// Start starts cmd. exited is called exactly once, from another
	// goroutine, when the process has exited and been waited for.
	Start(cmd *exec.Cmd, exited func(exitStatus)) (proc, error)
	// CPUTicks is a process's user+system CPU time in clock ticks
	// (procfs.ClockTicks a second).
	CPUTicks(pid int) (uint64, bool)
	// Adopt takes over pid, a child this process started before it
	// re-executed itself (upgrade): exited is called as for Start.
	Adopt(pid int, exited func(exitStatus)) (proc, error)
	// Exec replaces the process image by path, from the thread that
	// starts the workers, with the environment env returns: env runs on
	// that thread once the supervisor's signals are held there
	// (execsignal.Hold; holds: path holds them itself from its start).
	// It returns only on failure.
	Exec(path string, argv []string, holds bool, env func() ([]string, error)) error
}

// proc is a started worker process.
type proc interface {
	Pid() int
	Signal(sig syscall.Signal) error
}

// exitStatus says how a process ended: the signal that killed it, or its
// exit code. known is false when Wait could not tell; err is Wait's error.
type exitStatus struct {
	signal string
	code   int
	known  bool
	err    error
}

func exitOf(st *os.ProcessState, err error) exitStatus {
	if st == nil {
		return exitStatus{err: err}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitStatus{signal: signalName(ws.Signal()), known: true, err: err}
	}
	return exitStatus{code: st.ExitCode(), known: true, err: err}
}

// signalName is sig as Node's 'exit' event names it: "SIGKILL", not
// "killed".
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return sig.String()
}

// String describes the exit for error messages: "killed by SIGKILL",
// "exit code 3".
func (e exitStatus) String() string {
	switch {
	case !e.known:
		return "unknown status"
	case e.signal != "":
		return "killed by " + e.signal
	}
	return "exit code " + strconv.Itoa(e.code)
}

// describe puts the exit into ev: its signal, its code, or why it is not
// known.
func (e exitStatus) describe(ev *control.Event) {
	switch {
	case !e.known:
		if e.err != nil {
			ev.Error = e.err.Error()
		}
	case e.signal != "":
		ev.Signal = e.signal
	default:
		ev.Code = e.code
	}
}

// osSystem is the real operating system.
type osSystem struct {
	spawner *spawner
}

func (osSystem) Now() time.Time { return time.Now() }

func (osSystem) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

func (s osSystem) Start(cmd *exec.Cmd, exited func(exitStatus)) (proc, error) {
	if err := s.spawner.start(cmd); err != nil {
		return nil, err
	}
	// Wait exactly once, from a goroutine started right after Start.
	go func() {
		err := cmd.Wait()
		exited(exitOf(cmd.ProcessState, err))
	}()
	return osProc{cmd.Process}, nil
}

// Adopt waits for pid, which must be a child of this process. After
// execve the children are still this pid's: wait4 (here through a pidfd,
// os.FindProcess) takes their exit status as for any child. A pid that is
// not a child fails at once.
func (osSystem) Adopt(pid int, exited func(exitStatus)) (proc, error) {
	if st, err := procfs.ReadStat(pid); err != nil || st.PPID != os.Getpid() {
		return nil, fmt.Errorf("adopt: pid %d is not a child of this process", pid)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	go func() {
		st, err := p.Wait()
		exited(exitOf(st, err))
	}()
	return osProc{p}, nil
}

func (s osSystem) Exec(path string, argv []string, holds bool, env func() ([]string, error)) error {
	return s.spawner.exec(path, argv, holds, env)
}

func (osSystem) CPUTicks(pid int) (uint64, bool) {
	st, err := procfs.ReadStat(pid)
	return st.CPUTicks(), err == nil
}

type osProc struct{ p *os.Process }

func (p osProc) Pid() int { return p.p.Pid }

func (p osProc) Signal(sig syscall.Signal) error { return p.p.Signal(sig) }

package proctest

import (
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/procfs"
)

// Proc is one process under test, typically a supervisor.
type Proc struct {
	Cmd *exec.Cmd
	Out *Output // its stdout and stderr, and its children's that inherit them

	t    testing.TB
	done chan struct{}
	exit int
}

// Start starts cmd with its stdout and stderr into Out (unless the caller
// set them), and watches it. When the test ends, Proc kills it and every
// child it left (see Kill) and logs the tail of its output if the test
// failed.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Out: &Output{}, t: t, done: make(chan struct{})}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		// The same writer for both: os/exec then gives the child one pipe
		// and copies it on one goroutine, so lines do not interleave.
		cmd.Stdout, cmd.Stderr = p.Out, p.Out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if cmd.SysProcAttr.Pdeathsig == 0 {
		// Should the test binary die (a timeout's panic), the process goes
		// too, and a supervisor's workers with it.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if cmd.WaitDelay == 0 {
		// A grandchild that outlives the process (a worker that missed
		// its supervisor's death) would hold the output pipe open, and
		// Wait with it.
		cmd.WaitDelay = 10 * time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		p.exit = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s output (last 100 lines):\n%s", cmd.Path, p.Out.Tail(100))
		}
	})
	return p
}

// PID is the process's id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process; failing to is fatal to the test.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", sig, err)
	}
}

// Done is closed once the process has exited and its output is copied
// (for at most 10s after its exit, while a child it left holds the pipe).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitCode is the exit status once Done is closed (-1 for a signal).
func (p *Proc) ExitCode() int {
	<-p.done
	return p.exit
}

// WaitExit waits up to d for the process to exit and returns its exit
// status; still running after d is fatal to the test.
func (p *Proc) WaitExit(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exit
	case <-time.After(d):
		p.t.Fatalf("%s still running after %s", p.Cmd.Path, d)
		return -1
	}
}

// Children lists the process's live children (a supervisor's workers).
func (p *Proc) Children() []int { return procfs.Children(p.PID()) }

// FDs counts the process's open descriptors; failing to is fatal.
func (p *Proc) FDs() int {
	p.t.Helper()
	n, err := fdtest.Count(p.PID())
	if err != nil {
		p.t.Fatalf("counting descriptors: %v", err)
	}
	return n
}

// Kill resumes (a test may have stopped one) and kills the process and its
// children, by pid, and fails the test unless all are gone within 5s.
// Killing what is gone is harmless: Kill runs again when the test ends.
func (p *Proc) Kill() {
	kids := p.Children()
	for _, pid := range kids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	p.Cmd.Process.Signal(syscall.SIGKILL) // an error if it is gone, as meant
	// The children first, then wait: they may hold the output pipe open,
	// and Wait waits for its end.
	for _, pid := range kids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	<-p.done
	for _, pid := range append(kids, p.PID()) {
		WaitGone(p.t, pid, 5*time.Second)
	}
}

// WaitGone fails the test unless pid is gone (or a zombie) within d.
func WaitGone(t testing.TB, pid int, d time.Duration) {
	t.Helper()
	if !Poll(d, func() bool { return !procfs.Alive(pid) }) {
		t.Errorf("process %d still alive after %s", pid, d)
	}
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Poll checks cond every few milliseconds until it holds (true) or d
// passes (false).
func Poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Eventually is Poll that fails the test, saying what did not happen.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(d, cond) {
		t.Fatalf("%s: not within %s", what, d)
	}
}

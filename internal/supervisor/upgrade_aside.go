package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/reaper"
)

// aside is the new binary run beside the workers, as the check and the
// rehearsal run it: bounded by checkTimeout, its output kept (up to
// checkOutputMax), in a process group of its own, killed whole.
type aside struct {
	what, path  string // what names it in messages: "check", "rehearsal of"
	cmd         *exec.Cmd
	owned       *reaper.Owned
	ctx         context.Context
	cancel      context.CancelFunc
	out, errOut cappedBuffer
	stopped     atomic.Bool // ended by stop, not by the bound
}

// runAside runs path with args and env (nil: this process's) beside the
// workers (what names it), within checkTimeout, and returns what it
// printed.
func (u *upgrader) runAside(what, path string, args, env []string) (string, error) {
	a, err := u.startAside(what, path, args, env, nil)
	if err != nil {
		return "", err
	}
	return a.wait()
}

// startAside starts path as runAside does and returns at once; started,
// if not nil, is called once it has started or failed to. The caller
// waits for it (wait) exactly once.
func (u *upgrader) startAside(what, path string, args, env []string, started func()) (*aside, error) {
	a := &aside{what: what, path: path, owned: &u.s.owned}
	a.ctx, a.cancel = context.WithTimeout(context.Background(), checkTimeout)
	cmd := exec.CommandContext(a.ctx, path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &a.out, &a.errOut
	// Its output is a pipe that os/exec reads until every writer has
	// closed it: a process it leaves behind (a wrapper's daemon), or one
	// it started before the timeout killed it, would hold Wait for as
	// long as it lives. Wait stops reading this long after it exited.
	cmd.WaitDelay = time.Second
	// In a group of its own, killed once it exits: what it leaves would
	// live on as our child (a subreaper) in our group, never reaped.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	a.cmd = cmd
	err := a.owned.Start(cmd) // recorded as ours: the reaper must not take its status
	if started != nil {
		started()
	}
	if err != nil {
		a.cancel()
		return nil, fmt.Errorf("upgrade: %s %s: %w", what, path, unwrapExec(err))
	}
	return a, nil
}

// stop kills it (and its group) before its bound: the supervisor is
// stopping. wait still reaps it. Any goroutine.
func (a *aside) stop() {
	a.stopped.Store(true)
	a.cancel()
}

// wait waits for it to exit, reaps it, kills what it left in its group,
// and returns what it printed, or why it failed.
func (a *aside) wait() (string, error) {
	defer a.cancel()
	err := a.cmd.Wait()
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL) // the group outlives its leader
	a.owned.Forget(a.cmd.Process.Pid)
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited 0; what it left running printed nothing we read
	}
	switch {
	case a.stopped.Load():
		return "", fmt.Errorf("upgrade: %s %s: %w", a.what, a.path, errStopping)
	case a.ctx.Err() != nil:
		return "", fmt.Errorf("upgrade: %s %s: no answer within %s", a.what, a.path, checkTimeout)
	case a.out.over || a.errOut.over:
		return "", fmt.Errorf("upgrade: %s %s printed more than %d bytes", a.what, a.path, checkOutputMax)
	case err != nil:
		why := strings.TrimSpace(a.errOut.String())
		if why == "" {
			why = "no message"
		}
		return "", fmt.Errorf("upgrade: %s %s failed (%v): %s", a.what, a.path, err, printableLine(why))
	}
	return a.out.String(), nil
}

// checkOutputMax bounds what -check-upgrade may print on each of its
// outputs: one line is expected.
const checkOutputMax = 64 << 10

// cappedBuffer keeps up to checkOutputMax bytes. Past that its Write
// fails, so that os/exec stops reading and the writer gets EPIPE.
// Not an embedded bytes.Buffer: io.Copy would use its ReadFrom, which
// reads without bound.
type cappedBuffer struct {
	b    bytes.Buffer
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.b.Len()+len(p) > checkOutputMax {
		b.over = true
		return 0, errors.New("upgrade: check output too long")
	}
	return b.b.Write(p)
}

func (b *cappedBuffer) String() string { return b.b.String() }

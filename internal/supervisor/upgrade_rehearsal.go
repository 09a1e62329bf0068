package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// An execve cannot be undone: a release that passes -check-upgrade and
// then cannot restore (it exits, it is a wrapper that runs something
// else, it reads the state differently) would take the service down with
// the old image. So before the real execve, the new binary rehearses: it
// runs as a child, with a copy of the state and duplicates of every kept
// descriptor, and goes through the restore as far as it can without
// touching what the live process uses — it reads and checks the state,
// checks every descriptor (open, the kind its role needs) and takes each
// listener — then reports success and exits. It does not accept, adopt
// workers, bind the control socket, nor build the mode (which would set
// socket options and reuseport's steering program on the live sockets).

// envRehearsal, in the child's environment, makes it rehearse.
const envRehearsal = "PREFORK_UPGRADE_REHEARSAL"

// rehearsalLine is what a successful rehearsal prints.
const rehearsalLine = "prefork-upgrade-rehearsal ok"

// rehearseThenExec rehearses path on st, then execs it; it returns only
// on failure.
func (u *upgrader) rehearseThenExec(st *upgradeState, path string) error {
	if u.rehearse != nil {
		if err := u.rehearse(st, path); err != nil {
			return err
		}
	}
	if loseWorker != "" {
		u.killReaped(u.s.slots[0].cur)
	}
	return u.execState(st, path, path)
}

// rehearseChild runs path as a rehearsal on st (see above) and returns
// why it failed, if it did. st's descriptors are inherited by the child
// only: no other process is started meanwhile (the owner goroutine, which
// starts workers, waits here).
func (u *upgrader) rehearseChild(st *upgradeState, path string) error {
	mem, err := writeState(st)
	if err != nil {
		return err
	}
	defer mem.Close()
	memfd, err := fdOf(mem)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	env := append(withoutVar(st.Env, envState), envState+"="+strconv.Itoa(memfd), envRehearsal+"=1")
	// os/exec keeps every descriptor without close-on-exec open in the
	// child, at the same number: the state's numbers hold there too.
	if err := st.setCloexec(false); err != nil {
		st.setCloexec(true)
		return err
	}
	setCloexec(memfd, false)
	out, err := u.runAside("rehearsal of", path, st.Args, env, func() {
		st.setCloexec(true)
		setCloexec(memfd, true)
	})
	switch {
	case err != nil:
		return err
	case !strings.Contains(out, rehearsalLine):
		return fmt.Errorf("upgrade: %s exited without restoring in its rehearsal: it printed %q", path, printableLine(out))
	}
	return nil
}

// rehearsing reports whether this process is an upgrade's rehearsal.
func rehearsing() bool {
	_, ok := os.LookupEnv(envRehearsal)
	return ok
}

// rehearse is the child's side: it restores st as far as it can without
// touching what the live process uses, prints rehearsalLine and returns
// the exit status.
func rehearse(cfg Config, log *zap.Logger, st *upgradeState, err error) int {
	if st == nil {
		fmt.Fprintf(os.Stderr, "supervisor: rehearsal: %v\n", err)
		return 1
	}
	// The real restore rebuilds without what is missing (a wrapper that
	// closes it would close it then too): so does this one.
	st.repair(st.missing, log.Named("rehearsal"))
	if err == nil {
		err = restoreCheck(cfg, st)
	}
	for _, f := range st.FDs {
		if err != nil || !listenerRoles[f.Role] {
			continue
		}
		fl := file(f.FD, f.Role)
		var ln net.Listener
		if ln, err = net.FileListener(fl); err == nil {
			ln.Close()
		} else {
			err = fmt.Errorf("upgrade: kept %s %d: %w", f.Role, f.FD, err)
		}
		fl.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: rehearsal: %v\n", err)
		return 1
	}
	fmt.Println(rehearsalLine)
	return 0
}

// runAside runs path with args and env (nil: this process's) beside the
// workers, as the check and the rehearsal do (what names it), within
// checkTimeout, and returns what it printed; started, if not nil, is
// called once it has started or failed to.
func (u *upgrader) runAside(what, path string, args, env []string, started func()) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var out, errOut cappedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// Its output is a pipe that os/exec reads until every writer has
	// closed it: a process it leaves behind (a wrapper's daemon), or one
	// it started before the timeout killed it, would hold Wait for as
	// long as it lives. Wait stops reading this long after it exited.
	cmd.WaitDelay = time.Second
	// In a group of its own, killed once it exits: what it leaves would
	// live on as our child (a subreaper) in our group, never reaped.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := u.s.owned.Start(cmd) // recorded as ours: the reaper must not take its status
	if started != nil {
		started()
	}
	if err != nil {
		return "", fmt.Errorf("upgrade: %s %s: %w", what, path, unwrapExec(err))
	}
	err = cmd.Wait()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group outlives its leader
	u.s.owned.Forget(cmd.Process.Pid)
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited 0; what it left running printed nothing we read
	}
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("upgrade: %s %s: no answer within %s", what, path, checkTimeout)
	case out.over || errOut.over:
		return "", fmt.Errorf("upgrade: %s %s printed more than %d bytes", what, path, checkOutputMax)
	case err != nil:
		why := strings.TrimSpace(errOut.String())
		if why == "" {
			why = "no message"
		}
		return "", fmt.Errorf("upgrade: %s %s failed (%v): %s", what, path, err, printableLine(why))
	}
	return out.String(), nil
}

// checkListenersField is what -check-upgrade adds to checkLine: the names
// of the listeners this binary would serve given the flags it was run
// with, each query-escaped, in order: " listeners=a,b".
func checkListenersField(cfg Config) string {
	specs, err := cfg.Listeners()
	if err != nil {
		return ""
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = url.QueryEscape(s.Name)
	}
	return " listeners=" + strings.Join(names, ",")
}

// checkedListeners checks what path's -check-upgrade printed (out) names
// every listener this supervisor serves (have): a release that, given the
// same flags, would not serve one of them is refused, naming it. A
// socket-activated supervisor's names come from systemd, not the flags:
// the rehearsal checks those. A binary that does not report its
// listeners predates several of them: refused when there are several.
func checkedListeners(path, out string, have []listening) error {
	if len(have) == 0 || have[0].activated {
		return nil
	}
	var names []string
	reported := false
	for _, f := range strings.Fields(out) {
		v, ok := strings.CutPrefix(f, "listeners=")
		if !ok {
			continue
		}
		reported = true
		for _, n := range strings.Split(v, ",") {
			if name, err := url.QueryUnescape(n); err == nil {
				names = append(names, name)
			}
		}
	}
	switch {
	case !reported && len(have) > 1:
		return fmt.Errorf("upgrade: %s does not report its listeners (an older release?): it would drop listener %q", path, have[1].name)
	case !reported:
		return nil
	}
	for _, l := range have {
		if !slices.Contains(names, l.name) {
			return fmt.Errorf("upgrade: %s would drop listener %q: given this supervisor's flags it serves %s", path, l.name, strings.Join(names, ", "))
		}
	}
	return nil
}

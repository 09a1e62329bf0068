package supervisor

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/execsignal"
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

// The rehearsal runs beside the owner goroutine, as the check does: a
// release that hangs in it must not stop the supervisor from accepting,
// handing off, reading heartbeats and answering ctl for the 5 s bound.
// The owner starts it (the fork must be the owner's: while the child
// starts, the state's descriptors are inheritable, and no worker may be
// forked then), serves on, and handles its end as an event, evRehearsed.
//
// Between the snapshot the rehearsal restores and the execve, the
// supervisor keeps changing. So the execve never uses that snapshot: it
// saves the state afresh (execNow), after checking again that the
// supervisor is at rest (canUpgrade), and only if that state keeps the
// very listeners the rehearsal took, by role and name (what a release can
// get wrong by name; a worker's channels and the pending connections are
// of the kinds the rehearsal checked, whichever worker holds them now).
// What may happen meanwhile:
//   - a worker dies: if its replacement is ready by the end, the state has
//     it; if not, the upgrade is refused (no ready worker);
//   - a reload or a scale begins: the upgrade is refused (not during one);
//     a scale that ended changes reuseport's sockets: refused, listeners
//     changed;
//   - a second SIGUSR2 or ctl upgrade: refused at once, one at a time
//     (requestUpgrade; SIGUSR2 logs that it coalesced);
//   - SIGTERM or ctl stop: the stop wins. The rehearsal is killed with its
//     process group and reaped, the upgrade answered that the supervisor
//     is stopping, and the owner's loop ends only after that (stopped).
//
// Every refusal says why; the operator asks again.

// rehearsal is an upgrade whose new binary is rehearsing.
type rehearsal struct {
	ev        evUpgrade
	listeners []string // what it took: keptListeners of its snapshot
	stop      func()   // kills it; its end still arrives
}

// evRehearsed: rehearsal r ended, failed with err if not nil.
type evRehearsed struct {
	r   *rehearsal
	err error
}

// startRehearsal starts ev.path's rehearsal on a snapshot of the state and
// returns; onRehearsed carries on.
func (u *upgrader) startRehearsal(ev evUpgrade) error {
	st, resume, err := u.saveState(nil) // no reply: the rehearsal answers no one
	if err != nil {
		return err
	}
	defer resume() // rr's accept loop runs again as soon as the child has started
	st.dropPending()
	r := &rehearsal{ev: ev, listeners: keptListeners(st)}
	if r.stop, err = u.rehearse(st, ev.path, func(err error) { u.s.post(evRehearsed{r: r, err: err}) }); err != nil {
		return err
	}
	u.rehearsal = r
	u.s.log.Info("rehearsing the upgrade", zap.String("path", ev.path), zap.Duration("within", checkTimeout))
	return nil
}

// onRehearsed execs the release that rehearsed, with the state as it is
// now, if the supervisor is still at rest; else it answers why not.
func (u *upgrader) onRehearsed(ev evRehearsed) {
	if u.rehearsal != ev.r { // not the one in progress: cannot happen
		return
	}
	u.rehearsal = nil
	if ev.err != nil {
		u.failed(ev.r.ev, ev.err)
		return
	}
	if err := u.canUpgrade(); err != nil {
		u.failed(ev.r.ev, fmt.Errorf("%w (it changed during the rehearsal)", err))
		return
	}
	u.execNow(ev.r.ev, ev.r.listeners)
}

// stopRehearsal kills the rehearsal in progress, if any: a stop wins over
// an upgrade. Its end still arrives, and answers the upgrade.
func (u *upgrader) stopRehearsal() {
	if u.rehearsal != nil {
		u.s.log.Info("stopping the upgrade's rehearsal", zap.String("path", u.rehearsal.ev.path))
		u.rehearsal.stop()
	}
}

// keptListeners names the listeners st keeps, in order, by role, name and
// slot: what the rehearsal took and the execve must keep.
func keptListeners(st *upgradeState) []string {
	var out []string
	for _, f := range st.FDs {
		if !listenerRoles[f.Role] {
			continue
		}
		n := f.Role + " " + f.Name
		if f.Slot != 0 {
			n += " of slot " + strconv.Itoa(f.Slot)
		}
		out = append(out, n)
	}
	return out
}

// dropPending leaves rr's pending connections out of st, the rehearsal's
// snapshot: a child that held one would keep its client from seeing it
// closed until the child exits.
func (st *upgradeState) dropPending() {
	st.Pending = nil
	st.FDs = slices.DeleteFunc(st.FDs, func(f fdRole) bool { return f.Role == rolePending })
}

// rehearseChild starts path as a rehearsal on st (see above), calls done
// once it has ended and been reaped, with why it failed if it did, and
// returns what stops it. st's descriptors are inheritable only while it
// starts, on the owner goroutine, which starts the workers: no other
// process inherits them.
func (u *upgrader) rehearseChild(st *upgradeState, path string, done func(error)) (func(), error) {
	mem, err := writeState(st)
	if err != nil {
		return nil, err
	}
	defer mem.Close() // the child has its own once started
	memfd, err := fdOf(mem)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	env := append(withoutVar(st.Env, envState), envState+"="+strconv.Itoa(memfd), envRehearsal+"=1")
	// os/exec keeps every descriptor without close-on-exec open in the
	// child, at the same number: the state's numbers hold there too.
	if err := st.setCloexec(false); err != nil {
		st.setCloexec(true)
		return nil, err
	}
	setCloexec(memfd, false)
	a, err := u.startAside("rehearsal of", path, st.Args, env, func() {
		st.setCloexec(true)
		setCloexec(memfd, true)
	})
	if err != nil {
		return nil, err
	}
	go func() {
		out, err := a.wait()
		if err == nil && !strings.Contains(out, rehearsalLine) {
			err = fmt.Errorf("upgrade: %s exited without restoring in its rehearsal: it printed %q", path, printableLine(out))
		}
		done(err)
	}()
	return a.stop, nil
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

// signalsHeld is the field -check-upgrade adds to checkLine when this
// binary holds the supervisor's signals from before its runtime starts
// (execsignal.HoldsAtStart: the archive build): an upgrade to it then
// leaves them pending, blocked, rather than ignore the ones a Go
// executable's runtime would die of.
const signalsHeld = "signals=held"

func checkSignalsField() string {
	if execsignal.HoldsAtStart() {
		return " " + signalsHeld
	}
	return ""
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

package supervisor

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/execsignal"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

func init() {
	// The archive build catches the signals from its start, in every
	// image (see execsignal); run handles what they queue.
	if ch, ok := execsignal.Early(); ok {
		earlySigs = ch
	}
	// The image an upgrade started: the thread that called execve, now
	// this process's main thread, forked the workers, and their Pdeathsig
	// fires when it exits. Start makes main's goroutine the spawner, which
	// forks every later worker and makes the next execve. Go keeps the
	// main goroutine on the main thread only if it is locked there during
	// init. In the archive build init runs on a thread of the runtime's,
	// and main's goroutine is the C main's call, which Go keeps on the
	// main thread for as long as it runs.
	if _, ok := os.LookupEnv(envState); ok {
		if unix.Gettid() == unix.Getpid() {
			runtime.LockOSThread()
		}
		// Until signal.Notify, SIGHUP, SIGINT and SIGTERM end a Go
		// program, and this image's workers with it (Pdeathsig). An image
		// that execsignal.Hold preceded catches them from its first
		// package's init on (see execsignal); one started by an older
		// supervisor from here.
		if earlySigs == nil {
			earlySigs = make(chan os.Signal, 16)
			signal.Notify(earlySigs, supervisorSignals...)
		}
	}
}

// earlySigs gets the supervisor's signals from init on in the image an
// upgrade started and in the archive build; nil in any other process.
var earlySigs chan os.Signal

// supervisorSignals are the signals the owner goroutine handles (onSignal).
var supervisorSignals = execsignal.Signals

// takeSignals empties ch (nil: none) into st, for the image that execve
// starts: signals Go queued for this one are lost with it.
func (st *upgradeState) takeSignals(ch <-chan os.Signal) {
	for {
		select {
		case sig := <-ch:
			if n, ok := sig.(syscall.Signal); ok {
				st.Signals = append(st.Signals, int(n))
			}
		default:
			return
		}
	}
}

// restore checks st, rolling back to the previous binary if it cannot be
// used, and supervises from it.
func restore(cfg Config, log *zap.Logger, st *upgradeState, err error, sp *spawner, started func(*Engine)) error {
	if st != nil {
		st.lost = st.repair(st.missing, log)
	}
	if err == nil {
		err = restoreCheck(cfg, st)
	}
	if err != nil {
		if st != nil && len(st.lost) > 0 {
			err = fmt.Errorf("%w (missing after the execve: %s)", err, strings.Join(st.lost, "; "))
		}
		if st == nil || st.Binary < 0 || st.Failure != "" {
			return err // nothing to roll back to, or this is the rollback
		}
		log.Error("cannot restore the upgrade's state; rolling back", zap.String("to", st.Previous), zap.Error(err))
		return rollback(st, err, sp)
	}
	if st.Binary >= 0 {
		unix.Close(st.Binary) // this image opened its own
		st.Binary = -1
	}
	cfg.Workers = len(st.Slots)
	return run(cfg, log, st, sp, started)
}

// restoreCheck checks everything restoring st needs before taking any of
// its descriptors, so that a failure can still roll back with all of them.
func restoreCheck(cfg Config, st *upgradeState) error {
	if failRestore != "" && !rehearsing() { // the tests prove the rollback
		return fmt.Errorf("upgrade: restore fails in this build (%s)", failRestore)
	}
	if len(st.Slots) == 0 {
		return fmt.Errorf("upgrade: the state has no slots")
	}
	for _, f := range st.FDs {
		if _, err := unix.FcntlInt(uintptr(f.FD), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("upgrade: %s descriptor %d did not survive execve: %w", f.Role, f.FD, err)
		}
	}
	// An older image's state has no Mode: its reuseport state has Ports.
	reusePort := st.Mode == ipc.ModeReusePort || len(st.Ports)+st.portsLost > 0
	if (cfg.Mode == ipc.ModeReusePort) != reusePort {
		return fmt.Errorf("upgrade: the state is not for -mode %s", cfg.Mode)
	}
	return checkKeptListeners(st)
}

// rollback re-executes the previous binary with st and the reason the
// restore failed, which it reports to the client that asked. It returns
// only if that fails too.
func rollback(st *upgradeState, why error, sp *spawner) error {
	st.Failure = why.Error()
	s := &Supervisor{sys: &osSystem{spawner: sp}, notify: nil, sigs: earlySigs}
	s.up.s = s
	// The previous binary's own file, kept open across the upgrade: its
	// path may hold the new release by now.
	// Whether the previous binary holds the signals from its start is
	// not known here: held as for any Go executable.
	err := s.up.execState(st, fdPath(st.Binary), st.Previous, false)
	return fmt.Errorf("%w; rollback to %s failed: %v", why, st.Previous, err)
}

// restoreState sets what the runtime lost from st, before the services
// start: counters, crash budgets, the pids the reaper must leave alone and
// the control socket.
func (u *upgrader) restoreState(st *upgradeState) {
	u.s.gen, u.s.begun, u.upgrades = st.Gen, st.Begun, st.Upgrades
	if st.Failure == "" {
		u.upgrades++
	}
	c := &u.s.counts
	for k, v := range st.Counts.Spawns {
		c.spawns[k] = v
	}
	for k, v := range st.Counts.Exits {
		c.exits[k] = v
	}
	for k, v := range st.Counts.Reloads {
		c.reloads[k] = v
	}
	c.protocol, c.freezes = st.Counts.Protocol, st.Counts.Freezes
	for _, ss := range st.Slots {
		u.s.owned.Add(ss.Worker.PID) // before the reaper runs
	}
}

// keptListener takes the listener an upgrade kept under role and name, if
// any: nil when there is none or it cannot be used, which the caller meets
// by binding again.
func (u *upgrader) keptListener(role, name string) net.Listener {
	ln, err := u.kept.listener(role, name)
	if err != nil {
		u.s.log.Warn("cannot serve on the kept listener; binding again", zap.String("role", role), zap.Error(err))
	}
	return ln
}

// adopt takes over the workers st lists: each gets its channels back and
// is waited for and routed as the ready worker it is.
func (u *upgrader) adopt(st *upgradeState) error {
	now := u.s.sys.Now()
	for _, ss := range st.Slots {
		sl := &slot{id: ss.ID, restarts: ss.Restarts, handedPast: ss.HandedPast,
			budget: crashBudget{crashes: ss.Crashes, young: ss.Young}}
		u.s.slots = append(u.s.slots, sl)
		w := ss.Worker
		if w.Lost != "" {
			u.giveUp(sl, w)
			continue
		}
		ctl, err := ipc.NewChannel(file(w.Ctl, "ipc-local"))
		if err != nil {
			return fmt.Errorf("upgrade: slot %d: %w", ss.ID, err)
		}
		t, err := restoreTarget(sl, ctl, w, u.s.log)
		if err != nil {
			ctl.Close()
			return fmt.Errorf("upgrade: slot %d: %w", ss.ID, err)
		}
		if w.features()&ipc.FeatureHandBack != 0 {
			u.s.mode.handoff().Receive(t) // what it hands back when it drains
		}
		p := &process{slot: sl, gen: w.Gen, ctl: ctl, link: &preforkLink{ctl: ctl}, t: t,
			state: control.StateReady, started: w.Started, readyAt: w.ReadyAt, uses: w.features(),
			beatAt: now, read: make(chan struct{}), watched: true, maxRequests: w.MaxRequests}
		p.pid = w.PID
		if t != nil {
			p.beatHanded, p.beatBack = t.Handed(), t.HandedBack() // its open connections: unknown until it beats (openConns)
		}
		u.s.live[p.pid], sl.cur = p, p
		pr, err := u.s.sys.Adopt(w.PID, func(st exitStatus) {
			p.link.exited()
			p.readerDone()
			u.s.post(evExit{p: p, st: st})
		})
		if err != nil {
			// It exited while the old image re-executed itself: that
			// image's waiter reaped it, and its exit event was lost with
			// the image. Its exit, handled once the supervisor runs, reads
			// back what it was handed and respawns the slot as a crash.
			u.s.log.Warn("a worker kept across the upgrade is gone", zap.Int("slot", sl.id), zap.Int("pid", w.PID), zap.Error(err))
			p.proc = goneProc(w.PID)
			u.s.enqueue(evExit{p: p, st: exitStatus{err: err}})
			continue
		}
		p.proc = pr
		p.link.started(u.s, p)
		route(u.s.mode, p)
	}
	return nil
}

// goneProc is a worker that exited before it could be adopted.
type goneProc int

func (p goneProc) Pid() int                  { return int(p) }
func (goneProc) Signal(syscall.Signal) error { return os.ErrProcessDone }

// restoreTarget rebuilds the handoff's view of w: in rr its own channel
// and the duplicate of its end; in reuseport the control channel ctl, lent,
// and that duplicate; in shared nothing.
func restoreTarget(sl *slot, ctl *ipc.Channel, w workerState, log *zap.Logger) (*handoff.Target, error) {
	if w.Keep < 0 {
		return nil, nil
	}
	ch := ctl
	if w.Handoff >= 0 {
		var err error
		if ch, err = ipc.NewChannel(file(w.Handoff, "ipc-handoff")); err != nil {
			return nil, err
		}
	}
	keep, err := ipc.NewChannel(file(w.Keep, "ipc-keep"))
	if err != nil {
		if ch != ctl {
			ch.Close()
		}
		return nil, err
	}
	log = log.With(zap.Int("slot", sl.id))
	tr := handoff.NewFrames(ch, keep, log)
	if ch == ctl {
		tr = handoff.OverControl(ctl, keep, log)
	}
	t := handoff.RestoreTarget(sl.id, tr, handoff.TargetState{Handed: w.Handed + w.Returned, Returned: w.Returned,
		Closed: w.Closed, Peers: w.Peers, Paused: w.Paused})
	t.SetGeneration(w.Gen) // a sticky table forgets a slot's keys only when this changes
	return t, nil
}

// resumed finishes a restore once the mode accepts again and the workers
// are routed: it tells systemd and answers the client that asked for the
// upgrade.
func (u *upgrader) resumed(st *upgradeState) {
	u.s.phase = phaseRunning
	u.s.notify.Ready(u.s.statusLine())
	r := control.Response{OK: true, Message: fmt.Sprintf("upgraded from %s to %s in place (pid %d, %d workers kept, accept gap %.2fms)",
		st.From, Version, os.Getpid(), len(st.Slots), float64(u.acceptGap.Microseconds())/1000)}
	if len(st.lost) > 0 {
		r.Message += "; rebuilt without " + strings.Join(st.lost, "; ")
	}
	if st.Failure != "" {
		r = control.Response{Error: st.Failure + "; rolled back to " + Version + ", still serving"}
		u.s.log.Error("upgrade rolled back", zap.String("version", Version), zap.String("reason", st.Failure))
	} else {
		fields := []zap.Field{zap.String("from", st.From), zap.String("version", Version),
			zap.Int("workers", len(st.Slots)), zap.Duration("accept_gap", u.acceptGap), zap.Int("upgrades", u.upgrades)}
		if held, caught := execsignal.Window(); !held.IsZero() {
			// From Hold to this image's first package init, SIGTERM,
			// SIGINT and SIGHUP can be lost (see internal/execsignal).
			fields = append(fields, zap.Int64("signals_held_ns", held.UnixNano()),
				zap.Int64("signals_caught_ns", caught.UnixNano()), zap.Duration("signal_window", caught.Sub(held)),
				zap.Duration("signals_held_before_exec", execsignal.Exec().Sub(held)))
		}
		u.s.log.Info("upgraded in place", fields...)
	}
	if st.Reply >= 0 {
		if err := control.Answer(file(st.Reply, "ctl-connection"), r); err != nil {
			u.s.log.Warn("could not answer ctl upgrade", zap.Error(err))
		}
	}
	u.replaySignals(st.Signals)
}

// replaySignals handles the signals an image received but had not handled
// when it re-executed itself, or tried to.
func (u *upgrader) replaySignals(sigs []int) {
	if len(sigs) > 0 {
		u.s.log.Info("handling the signals that arrived during the upgrade", zap.Ints("signals", sigs))
	}
	for _, n := range sigs {
		u.s.onSignal(syscall.Signal(n))
	}
}

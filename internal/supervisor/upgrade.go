package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/execsignal"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/httpserve"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/procfs"
)

// Version is the supervisor's build, set with
// -ldflags "-X github.com/prefork/prefork/internal/supervisor.Version=v1.2.3".
var Version = "dev"

// failRestore, set with -ldflags -X, makes this build's restore of an
// upgrade's state fail, so that the tests can prove the rollback. Only
// restoreCheck reads it; a release build leaves it empty.
var failRestore = ""

// loseWorker, set with -ldflags -X, makes this build kill slot 1's worker
// just before it re-executes itself, and wait until that worker's waiter
// has reaped it: the exit is then lost with the image, as when a worker
// dies during an upgrade. Only the tests set it.
var loseWorker = ""

// dropListener, set with -ldflags -X to a listener's name, makes this
// build's restore leave that listener out, as a release that lost it
// would: the tests prove that the rehearsal refuses such a binary. Only
// restoredListeners reads it.
var dropListener = ""

// signalsAtExec, set with -ldflags -X to signal numbers ("1,12,21"),
// makes this build send itself those signals on the thread that execs,
// once the signals are held and just before its first execve: they
// arrive in the middle of the upgrade, and must be handled by the new
// image as at any other time. Only the tests set it.
var signalsAtExec = ""

// upgrader is the supervisor's in-place upgrade: checking the new binary,
// saving the state, the execve, and in the new image the restore. It is
// the field up of a Supervisor and, like the rest of it, belongs to the
// owner goroutine (requestUpgrade excepted: see upgrading).
type upgrader struct {
	s *Supervisor

	exe     string   // this image's binary, resolved at start
	exeFile *os.File // and opened, for a rollback to it whatever replaces its path
	// rehearse starts the new binary's rehearsal on st and returns a
	// function that stops it; done gets its end, from another goroutine,
	// once it has been reaped. nil: none (fake tests).
	rehearse  func(st *upgradeState, path string, done func(error)) (stop func(), err error)
	rehearsal *rehearsal    // the one in progress, if any
	env       []string      // the environment it started with, systemd's variables included
	upgrading atomic.Bool   // a requestUpgrade runs: any goroutine
	upgrades  int           // completed since the first start
	acceptGap time.Duration // how long the last upgrade stopped accepting
	// kept holds the listeners the upgrade that started this image kept,
	// until the services take theirs; empty otherwise.
	kept *keptFDs
}

// upgradable says the process is the supervisor command (AllowUpgrade).
var upgradable atomic.Bool

// AllowUpgrade lets `ctl upgrade` and SIGUSR2 re-execute this process in
// place. The supervisor command calls it. A Go program that is its own
// primary (the cluster package) does not: the check would run it with
// -check-upgrade and flags it does not take, and its workers are the same
// binary, so a reload is its upgrade.
func AllowUpgrade() { upgradable.Store(true) }

// evUpgrade asks the owner to re-execute itself from path, which passed
// the check. reply, if not nil, is the asking client's connection, kept
// across execve for the new image's answer; answer gets the old image's
// answer when the upgrade does not happen.
type evUpgrade struct {
	path    string
	version string
	holds   bool // the new binary holds the signals from its start (checkSignalsField)
	reply   *os.File
	answer  chan control.Response
}

// requestUpgrade checks path (the running binary if "") off the owner
// goroutine, then has the owner rehearse it and re-execute itself, and
// holds upgrading until then. It returns when the upgrade did not happen; on success this process is the new image and
// the new image answers on the ctl connection in ctx, if fromCtl.
func (u *upgrader) requestUpgrade(ctx context.Context, path string, fromCtl bool) control.Response {
	if r, ok := u.begin(); !ok {
		return r
	}
	return u.upgradeBegun(ctx, path, fromCtl)
}

// begin takes the one upgrade in progress; refused says why not, logged:
// this process does not upgrade in place, or the request is coalesced
// with the upgrade in progress.
func (u *upgrader) begin() (refused control.Response, ok bool) {
	if !upgradable.Load() {
		err := errors.New("upgrade: only the supervisor command upgrades in place; a program that is its own primary takes a new binary with a reload")
		u.s.log.Error("upgrade refused", zap.Error(err))
		return control.Response{Error: err.Error()}, false
	}
	// One at a time: a second check would fork while the first upgrade
	// has cleared close-on-exec on what it keeps, and hold all of it.
	if !u.upgrading.CompareAndSwap(false, true) {
		u.s.log.Info("upgrade coalesced with the one in progress")
		return control.Response{Error: "upgrade: another upgrade is in progress"}, false
	}
	return control.Response{}, true
}

// upgradeBegun is requestUpgrade once begin took the upgrade: it gives it
// back when the upgrade did not happen.
func (u *upgrader) upgradeBegun(ctx context.Context, path string, fromCtl bool) control.Response {
	defer u.upgrading.Store(false)
	if path == "" {
		path = u.exe
	}
	version, holds, err := u.checkBinary(path)
	if err != nil {
		u.s.log.Error("upgrade refused", zap.String("path", path), zap.Error(err))
		return control.Response{Error: err.Error()}
	}
	u.s.mode.settle(ctx)
	var reply *os.File
	if fromCtl {
		if reply, err = control.ConnFile(ctx); err != nil {
			return control.Response{Error: "upgrade: " + err.Error()}
		}
		defer reply.Close() // not reached if execve succeeds: the new image answers on it
	}
	r, err := ask(context.Background(), u.s, func(answer chan control.Response) any {
		return evUpgrade{path: path, version: version, holds: holds, reply: reply, answer: answer}
	})
	if err != nil {
		return control.Response{Error: "upgrade: " + err.Error()}
	}
	return r
}

// onUpgrade begins the upgrade to ev.path, at rest only. It starts the
// new binary's rehearsal and returns: the owner serves on, and the
// rehearsal's end (onRehearsed) does the execve. Without a rehearsal (the
// fake tests) it execs at once.
func (u *upgrader) onUpgrade(ev evUpgrade) {
	if u.rehearsal != nil { // requestUpgrade lets one through at a time
		u.failed(ev, errors.New("upgrade: another upgrade is in its rehearsal"))
		return
	}
	if err := u.canUpgrade(); err != nil {
		u.failed(ev, err)
		return
	}
	u.s.log.Info("upgrading in place", zap.String("from", Version), zap.String("to", ev.version), zap.String("path", ev.path))
	if u.rehearse == nil {
		u.execNow(ev, nil)
		return
	}
	if err := u.startRehearsal(ev); err != nil {
		u.failed(ev, err)
	}
}

// execNow saves the state as it is now and execs ev.path with it. When a
// rehearsal came first, rehearsed are the listeners it took, which the
// state must still hold. It returns only if the upgrade did not happen,
// with everything as it was.
func (u *upgrader) execNow(ev evUpgrade, rehearsed []string) {
	st, resume, err := u.saveState(ev.reply)
	if err != nil {
		u.failed(ev, err)
		return
	}
	if now := keptListeners(st); rehearsed != nil && !slices.Equal(now, rehearsed) {
		resume()
		u.failed(ev, fmt.Errorf("upgrade: the listeners changed during the rehearsal of %s (it took %s; now %s): ask again",
			ev.path, strings.Join(rehearsed, ", "), strings.Join(now, ", ")))
		return
	}
	if loseWorker != "" {
		u.killReaped(u.s.slots[0].cur)
	}
	err = u.execState(st, ev.path, ev.path, ev.holds)
	resume()
	u.s.notify.Ready(u.s.statusLine())
	u.failed(ev, err)
	u.replaySignals(st.Signals) // taken from s.sigs for an image that did not start
}

// failed answers ev with why the upgrade did not happen.
func (u *upgrader) failed(ev evUpgrade, err error) {
	u.s.log.Error("upgrade failed; still serving", zap.String("version", Version), zap.Error(err))
	respond(ev.answer, control.Response{Error: err.Error()})
}

// execState writes st to a memfd, keeps st's descriptors (and only those)
// across execve, and execs path as argv0 with the supervisor's arguments;
// holds says that path holds the supervisor's signals from its start
// (see execsignal.Hold). It returns only on failure, with every
// descriptor close-on-exec again.
func (u *upgrader) execState(st *upgradeState, path, argv0 string, holds bool) error {
	// Go opens every descriptor close-on-exec; clear it on exactly the
	// ones listed in the state, and set it again if execve fails.
	if err := st.setCloexec(false); err != nil {
		st.setCloexec(true)
		return err
	}
	defer st.setCloexec(true)
	u.s.notify.Reloading()
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()
	return u.s.sys.Exec(path, append([]string{argv0}, st.Args...), holds, func() ([]string, error) {
		// On the thread that execs, with the supervisor's signals held
		// (execsignal.Hold): what reaches Go from here on is lost with
		// this image, so what it queued is taken last.
		execsignal.Flush()
		st.takeSignals(u.s.sigs)
		var err error
		if mem, err = writeState(st); err != nil {
			return nil, err
		}
		memfd, err := fdOf(mem)
		if err != nil {
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		if err := setCloexec(memfd, false); err != nil {
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		return append(withoutVar(st.Env, envState), envState+"="+strconv.Itoa(memfd)), nil
	})
}

// killReaped kills p and waits until its waiter has reaped it (see
// loseWorker).
func (u *upgrader) killReaped(p *process) {
	p.proc.Signal(syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := procfs.ReadStat(p.pid); err != nil {
			return
		}
	}
}

// withoutVar is env without the variable name.
func withoutVar(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// canUpgrade says why the supervisor cannot re-execute itself now: it
// does so only at rest, every slot with one ready worker, so that the
// state to hand over is the slots and their workers and nothing in flight.
func (u *upgrader) canUpgrade() error {
	switch {
	case u.s.phase != phaseRunning:
		return fmt.Errorf("upgrade: not while %s", u.s.phase)
	case u.s.reloader.roll != nil:
		return errors.New("upgrade: not during a reload")
	case u.s.scaler.scaling != nil:
		return errors.New("upgrade: not during a scale")
	case u.s.cfg.WorkerProtocol != "" && u.s.cfg.WorkerProtocol != ProtocolPrefork:
		return fmt.Errorf("upgrade: supported for -worker-protocol prefork only, not %s", u.s.cfg.WorkerProtocol)
	case u.s.cfg.WorkerOutput == "capture":
		return errors.New("upgrade: not supported with -worker-output capture")
	}
	for _, sl := range u.s.slots {
		if sl.cur == nil || sl.cur.state != control.StateReady {
			return fmt.Errorf("upgrade: not while slot %d has no ready worker", sl.id)
		}
	}
	for _, p := range u.s.live {
		if p.slot.cur != p {
			return fmt.Errorf("upgrade: not while worker %d (pid %d) is %s", p.slot.id, p.pid, p.state)
		}
	}
	// What the mode's sockets hold it checks as it saves them (mode.save).
	return nil
}

// saveState describes the supervisor for the image that replaces it. The
// mode saves its sockets first; in rr mode that stops the accept loop and
// takes the pending queue out of the handoff. resume undoes that, for an
// upgrade that did not happen.
func (u *upgrader) saveState(reply *os.File) (*upgradeState, func(), error) {
	st := &upgradeState{
		Format: stateFormat, From: Version, Previous: u.exe, Args: os.Args[1:], Env: u.env, Mode: u.s.cfg.Mode,
		Upgrades: u.upgrades, Begun: u.s.begun, Gen: u.s.gen,
		Counts: countsState{Spawns: u.s.counts.spawns, Exits: u.s.counts.exits, Reloads: u.s.counts.reloads,
			Protocol: u.s.counts.protocol, Freezes: u.s.counts.freezes},
		Listener: -1, Control: -1, Metrics: -1, Admin: -1, Reply: -1, Binary: -1,
	}
	resume := func() {}
	fail := func(err error) (*upgradeState, func(), error) {
		resume()
		return nil, nil, fmt.Errorf("upgrade: %w", err)
	}
	var err error
	if resume, err = u.s.mode.save(st); err != nil {
		return fail(err)
	}
	for _, sl := range u.s.slots {
		ss, err := saveSlot(st, sl)
		if err != nil {
			return fail(err)
		}
		st.Slots = append(st.Slots, ss)
	}
	if u.s.svc.ctlsvc != nil {
		if st.Control, err = u.s.svc.ctlsvc.save(st); err != nil {
			return fail(err)
		}
	}
	for _, h := range []struct {
		srv  *httpserve.Server
		to   *int
		role string
		name string
	}{{u.s.svc.metricsSrv, &st.Metrics, roleMetrics, u.s.cfg.Metrics}, {u.s.svc.adminServer(), &st.Admin, roleAdmin, u.s.cfg.Admin}} {
		if h.srv == nil {
			continue
		}
		ln, ok := h.srv.Listener().(syscall.Conn)
		if !ok {
			return fail(fmt.Errorf("the %s has no descriptor", h.role))
		}
		if *h.to, err = st.keepListener(ln, h.role, h.name, 0); err != nil {
			return fail(err)
		}
	}
	if u.exeFile != nil {
		fd, err := fdOf(u.exeFile)
		if err != nil {
			return fail(err)
		}
		st.Binary = st.keep(fd, roleBinary, 0)
	}
	if reply != nil {
		fd, err := fdOf(reply)
		if err != nil {
			return fail(err)
		}
		st.Reply = st.keep(fd, roleReply, 0)
	}
	if st.StoppedAt.IsZero() { // workers accept: this is when the supervisor paused
		st.StoppedAt = time.Now()
	}
	return st, resume, nil
}

// saveSlot describes sl and its (ready) worker, keeping its descriptors.
func saveSlot(st *upgradeState, sl *slot) (slotState, error) {
	p := sl.cur
	ss := slotState{ID: sl.id, Restarts: sl.restarts, HandedPast: sl.handedPast,
		Crashes: sl.budget.crashes, Young: sl.budget.young}
	w := workerState{PID: p.pid, Gen: p.gen, Started: p.started, ReadyAt: p.readyAt, Uses: uint64(p.uses),
		MaxRequests: p.maxRequests, Handoff: -1, Keep: -1}
	var err error
	if w.Ctl, err = fdOf(p.ctl); err != nil {
		return ss, err
	}
	st.keep(w.Ctl, roleControl, sl.id)
	if f := handoff.FramesOf(p.t); f != nil {
		// Handed as an older supervisor counts it (less what was
		// returned), so that a rollback to one restores the right load.
		ts := p.t.State()
		w.Handed, w.Returned, w.Closed, w.Peers, w.Paused = ts.Handed-ts.Returned, ts.Returned, ts.Closed, ts.Peers, ts.Paused
		own, keep := f.Channels() // own is nil when the control channel is lent (reuseport)
		if own != nil {
			if w.Handoff, err = fdOf(own); err != nil {
				return ss, err
			}
			st.keep(w.Handoff, roleHandoff, sl.id)
		}
		if w.Keep, err = fdOf(keep); err != nil {
			return ss, err
		}
		st.keep(w.Keep, roleKeep, sl.id)
	}
	ss.Worker = w
	return ss, nil
}

// features is w's ready announcement.
func (w workerState) features() ipc.Features { return ipc.Features(w.Uses) }

package supervisor

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

// process is one worker process: starting → ready → draining → exited.
// Only the owner goroutine touches it, except the fields its control
// reader was given at spawn.
type process struct {
	slot    *slot
	gen     int
	pid     int
	proc    proc
	ctl     *ipc.Channel    // the supervisor's end of the control channel; nil if none
	link    link            // how the worker speaks to the supervisor (its protocol)
	read    chan struct{}   // closed when the control reader has stopped
	t       *handoff.Target // the worker as the handoff sees it; nil in shared mode
	state   control.State
	started time.Time
	readyAt time.Time
	uses    ipc.Features // what its ready frame announced
	beatAt  time.Time    // last healthy heartbeat, on the supervisor's clock
	beat    ipc.Heartbeat
	// beatHanded, beatBack: the connections the handoff had sent it, and
	// those it had handed back, at its last heartbeat (openConns).
	beatHanded, beatBack uint64
	askedAt              time.Time // when rebalancing last asked it to give connections back
	recent               recent    // its last heartbeats, for requests/s and latency
	// unhealthy: its last heartbeat said its own health check failed.
	unhealthy bool
	asked     bool          // the supervisor asked it to exit
	held      atomic.Bool   // its reader waits for room for a message (messages.go)
	forked    bool          // started by a Fork, which its failure fails
	reason    control.Cause // why it was asked

	// watched: hang detection applies. From the start if its protocol
	// beats, else from its first healthy heartbeat.
	watched bool

	maxRequests int // recycle after this many requests; 0: never
	cpuTicks    uint64
	cpuAt       time.Time
	cpuPct      float64
}

func (p *process) uptime(now time.Time) time.Duration { return now.Sub(p.started) }

// log fields naming p.
func (p *process) fields(more ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Int("generation", p.gen)}, more...)
}

// start spawns a worker into sl; cause says why, for logs and metrics.
func (s *Supervisor) start(sl *slot, cause control.Cause) error {
	p, err := s.spawn(sl, s.gen, cause)
	if err != nil {
		return err
	}
	sl.cur = p
	return nil
}

// spawn starts a worker for sl in generation gen. Every descriptor the
// worker and the supervisor need is made before the process starts, so a
// failure at any step (EMFILE, say) is a clean failed start: nothing runs
// and nothing is left open.
func (s *Supervisor) spawn(sl *slot, gen int, cause control.Cause) (*process, error) {
	lk, err := s.proto.open(sl)
	if err != nil {
		return nil, err
	}
	ctl, ctlRemote := lk.control()
	defer ctlRemote.Close() // the worker has its own copy once started (nil: none)
	h, err := s.mode.prepare(sl, ctl, ctlRemote)
	if err != nil {
		lk.close()
		return nil, err
	}
	defer h.close()
	if h.t != nil {
		h.t.SetGeneration(gen)
	}
	cmd := s.command(sl, gen, lk, h)
	var capture *outputCapture
	if s.cfg.WorkerOutput == "capture" {
		if capture, err = newOutputCapture(); err != nil {
			h.abort()
			lk.close()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = capture.stdoutW, capture.stderrW
	}
	p := &process{slot: sl, gen: gen, ctl: ctl, link: lk, t: h.t, state: control.StateStarting, started: s.sys.Now(), read: make(chan struct{}), watched: s.proto.beats()}
	// The exit callback runs on the waiter goroutine; the owner reads p
	// only after spawn has returned.
	pr, err := s.sys.Start(cmd, func(st exitStatus) {
		p.link.exited()
		p.readerDone()
		s.post(evExit{p: p, st: st})
	})
	if capture != nil {
		pid := 0
		if err == nil {
			pid = pr.Pid()
		}
		capture.started(err == nil, s.log, sl.id, pid)
	}
	if err != nil {
		h.abort()
		lk.close()
		return nil, fmt.Errorf("worker %s: %w", s.cfg.Command[0], unwrapExec(err))
	}
	p.proc, p.pid = pr, pr.Pid()
	s.live[p.pid] = p
	s.counts.spawns[cause]++
	if s.cfg.MaxRequests > 0 {
		p.maxRequests = s.cfg.MaxRequests + rand.IntN(s.cfg.MaxRequestsJitter+1)
	}
	s.log.Info("spawned worker", p.fields(zap.String("cause", string(cause)))...)
	s.emit(p, control.Event{Kind: control.EventFork, Cause: cause})
	s.after(s.cfg.ReadyTimeout, evReadyDue{p: p})
	lk.started(s, p)
	return p, nil
}

// lastWords bounds how long a worker's exit waits for its control reader to
// pass on the frames it sent before it exited. The exit sets a past read
// deadline, so the reader takes what is queued and stops at once even
// while another descriptor of the worker's end (a child of the worker, or
// reuseport's keep) holds back the EOF.
const lastWords = time.Second

// readerDone waits until the control reader has read what the worker sent
// before it exited, so that a worker that said ready and then crashed is
// handled in that order, not as one that never became ready.
func (p *process) readerDone() {
	t := time.NewTimer(lastWords)
	defer t.Stop()
	select {
	case <-p.read:
	case <-t.C:
	}
}

// command is the worker's command line, environment and descriptors: its
// slot and generation, and what its protocol's link gives it, around h,
// what the mode gives it.
func (s *Supervisor) command(sl *slot, gen int, lk link, h handles) *exec.Cmd {
	argv := s.cfg.Command
	r := s.releases.of(gen)
	if r != nil {
		argv = r.args // a -config reload may have changed the command since
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if r != nil {
		// The generation's release: from its kept content once the file
		// on disk is another (release.go). Args[0] stays the command.
		if path, dir := r.exec(); path != r.path {
			cmd.Path, cmd.Err = path, nil
			cmd.Dir = dir
		}
	}
	cmd.Env = append(append(workerEnv(), sl.env...),
		ipc.EnvWorkerID+"="+strconv.Itoa(sl.id),
		ipc.EnvMode+"="+s.cfg.Mode,
		ipc.EnvGeneration+"="+strconv.Itoa(gen),
	)
	lk.command(s, cmd, h)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Die with the supervisor (see spawner for the thread caveat).
		Pdeathsig: syscall.SIGKILL,
		// Own process group: a terminal's Ctrl-C reaches the supervisor
		// only, which then drains the workers in order.
		Setpgid:    true,
		Credential: s.cred,
	}
	return cmd
}

// unwrapExec turns "fork/exec /x: no such file or directory" into a message
// that names the path once.
func unwrapExec(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// workerEnv is the supervisor's environment minus what belongs to the
// supervisor alone.
func workerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, ipc.EnvPrefix),
			k == "LISTEN_FDS", k == "LISTEN_PID", k == "LISTEN_FDNAMES",
			k == "NOTIFY_SOCKET", k == "WATCHDOG_USEC", k == "WATCHDOG_PID":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *Supervisor) onReady(p *process, uses ipc.Features) {
	if p.state != control.StateStarting || s.live[p.pid] != p {
		return
	}
	now := s.sys.Now()
	p.state, p.readyAt, p.uses = control.StateReady, now, uses
	boot := now.Sub(p.started)
	s.log.Info("worker ready", p.fields(zap.Duration("boot", boot), zap.Stringer("features", uses))...)
	s.emit(p, control.Event{Kind: control.EventReady, BootMS: float64(boot.Microseconds()) / 1000, Features: uses.String()})
	switch {
	case s.phase == phaseStopping:
		s.drain(p, control.CauseStop)
		return
	case s.reloader.roll != nil && s.reloader.roll.next == p:
		s.reloader.rollReady(p)
		return
	case p.slot.cur != p:
		return
	}
	route(s.mode, p)
	s.forks.forkReady(p.slot, p)
	if s.phase == phaseStarting && s.allReady() {
		s.running()
	}
	s.scaler.scaleProgress()
}

// running ends start-up: every slot has a ready worker.
func (s *Supervisor) running() {
	s.phase = phaseRunning
	took := s.sys.Now().Sub(s.begun)
	s.log.Info("all workers ready", zap.Int("workers", len(s.slots)), zap.Duration("startup", took))
	s.emit(nil, control.Event{Kind: control.EventRunning, Workers: len(s.slots), StartupMS: took.Milliseconds()})
	s.notify.Ready(s.statusLine())
	for _, ch := range s.readyWaiters {
		ch <- struct{}{}
	}
	s.readyWaiters = nil
	if s.reloader.reloadQueued {
		s.reloader.reloadQueued = false
		s.reloader.reloadAfter = append(s.reloader.reloadAfter, nil)
		s.reloader.afterOpts = s.reloadOptions(control.Request{})
	}
	s.idle()
}

// readyDue fails a worker that was not ready within -ready-timeout.
func (s *Supervisor) readyDue(p *process) {
	if p.state != control.StateStarting || s.live[p.pid] != p {
		return
	}
	s.log.Error("worker not ready in time; killing it", p.fields(zap.Duration("ready_timeout", s.cfg.ReadyTimeout))...)
	p.asked, p.reason = true, control.CauseReadyTimeout
	p.proc.Signal(syscall.SIGKILL)
	err := fmt.Errorf("worker %d (pid %d) not ready within -ready-timeout %s", p.slot.id, p.pid, s.cfg.ReadyTimeout)
	if !s.failedStarting(p, err) && p.slot.cur == p {
		s.vacate(p.slot)
		s.crashed(p.slot, p.uptime(s.sys.Now()), control.CauseCrash)
	}
}

// failedStarting handles a worker that failed before it was ready (exited,
// or missed -ready-timeout) where something waits for it: the rollout or
// the scale-up that started it fails, and a supervisor still starting
// stops. It reports false when nothing waited for it.
func (s *Supervisor) failedStarting(p *process, err error) bool {
	switch {
	case s.reloader.roll != nil && s.reloader.roll.next == p:
		s.reloader.rollFailed(err)
	case p.forked && s.forks.forkFailed(p.slot, err):
	case s.scaler.scaling != nil && s.scaler.scaling.adding[p.slot]:
		s.scaler.scaleFailed(p.slot, err)
	case s.phase == phaseStarting:
		s.beginStop(err)
	default:
		return false
	}
	return true
}

// vacate leaves sl without a current worker; the mode decides what happens
// to connections meant for the slot meanwhile.
func (s *Supervisor) vacate(sl *slot) {
	sl.cur = nil
	if s.phase != phaseStopping {
		s.mode.slot(sl, slotVacant)
	}
}

func (s *Supervisor) onExit(p *process, st exitStatus) {
	if s.live[p.pid] != p {
		return
	}
	delete(s.live, p.pid)
	s.owned.Forget(p.pid)
	wasStarting := p.state == control.StateStarting
	p.state = control.StateExited
	now := s.sys.Now()
	cause := p.reason
	if !p.asked && s.phase != phaseStopping {
		cause = control.CauseCrash
	} else if cause == "" {
		cause = control.CauseStop
	}
	s.counts.exits[cause]++
	ev := control.Event{Kind: control.EventExit, Reason: cause}
	st.describe(&ev)
	s.emit(p, ev)
	fields := p.fields(zap.Duration("uptime", p.uptime(now)), zap.String("reason", string(cause)))
	switch {
	case ev.Signal != "":
		fields = append(fields, zap.String("signal", ev.Signal))
	case ev.Error != "":
		fields = append(fields, zap.String("error", ev.Error))
	case st.known:
		fields = append(fields, zap.Int("code", ev.Code))
	}
	if p.t != nil {
		p.slot.handedPast += p.t.Handed()
		if n := s.mode.handoff().Recover(p.t); n > 0 {
			s.log.Info("re-routed connections queued for an exited worker", p.fields(zap.Int("connections", n))...)
		}
	}
	// After the read-back: in reuseport mode the control channel is also
	// the handoff channel.
	p.link.close()
	if p.slot.cur == p {
		s.vacate(p.slot)
	}
	s.releases.prune() // its generation's release, if it was the last of it
	defer s.scaler.scaleProgress()
	s.forks.claimable(p, cause, now)
	if cause != control.CauseCrash {
		s.log.Info("worker exited", fields...)
		return
	}
	s.log.Warn("worker exited unexpectedly", fields...)
	if wasStarting {
		why := fmt.Errorf("worker %d (pid %d) exited before it was ready: %s", p.slot.id, p.pid, st)
		if s.failedStarting(p, why) {
			return
		}
	}
	s.reloader.lost(p, control.CauseCrash) // a canary's crash fails it (canary.go)
	if p.slot.cur == nil && !p.slot.removed {
		s.crashed(p.slot, p.uptime(now), control.CauseCrash)
	}
}

// drain asks p to finish its connections and exit, and arms its kill timer.
func (s *Supervisor) drain(p *process, reason control.Cause) {
	if p.asked {
		return
	}
	s.dismiss(p, reason)
	s.log.Info("draining worker", p.fields(zap.String("reason", string(reason)))...)
	s.emit(p, control.Event{Kind: control.EventDrain, Reason: reason})
	s.after(s.cfg.Grace, evKillDue{p: p})
	p.link.drain(s, p)
}

// drainRetry is how soon a drain frame that met a full control channel is
// sent again. The worker has until -grace (its kill timer) either way.
const drainRetry = 50 * time.Millisecond

// killDue kills a worker that outlived its grace period.
func (s *Supervisor) killDue(p *process) {
	if s.live[p.pid] == p {
		s.log.Warn("worker still running; killing it", p.fields(zap.String("reason", string(p.reason)))...)
		p.proc.Signal(syscall.SIGKILL)
	}
}

// dismiss takes p out of rotation for good: it was asked to go (reason), and
// its exit is not a crash.
func (s *Supervisor) dismiss(p *process, reason control.Cause) {
	p.asked, p.reason, p.state = true, reason, control.StateDraining
	s.mode.handoff().Unroute(p.t)
}

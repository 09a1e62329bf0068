package supervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
	"github.com/prefork/prefork/internal/reaper"
	"github.com/prefork/prefork/internal/sdnotify"
)

// phase is where the supervisor is in its life.
type phase int

const (
	phaseStarting phase = iota // first workers not all ready yet
	phaseRunning
	phaseStopping
)

// Supervisor owns the listening sockets and the worker processes. All of its
// state below belongs to the goroutine running loop; everything else talks
// to it through events.
type Supervisor struct {
	cfg           Config
	log           *zap.Logger
	addr          string             // the address actually bound
	ln            *listener.Socket   // rr and shared
	slotListeners []*listener.Socket // reuseport, one per initial slot
	acceptLoops   []*acceptLoop      // rr: on ln
	activated     bool               // ln came from systemd (LISTEN_FDS)
	bal           balancer.Balancer[*target]
	handoff       *handoff
	spawner       *spawner
	owned         reaper.Owned
	cred          *syscall.Credential // -user/-group
	notify        *sdnotify.Notifier
	bus           *control.Broadcaster
	ctl           *control.Server

	events chan any
	done   chan struct{}
	pinged time.Time // last WATCHDOG=1 (owner loop)

	slots       []*slot
	live        map[int]*process // by pid, every process not yet waited for
	phase       phase
	gen         int
	begun       time.Time
	stopErr     error
	roll        *rollout
	reloadAfter []chan control.Response
	scaling     *scaling
	retired     map[int]*slot // reuseport slots scaled away, their sockets still served

	// Counters for metrics, by cause.
	spawnCauses map[control.Cause]uint64
	exitCauses  map[control.Cause]uint64
	reloads     map[string]uint64
}

// slot is a worker position, 1..N. Its worker's replacements keep its id
// (PREFORK_WORKER_ID) and, in reuseport mode, its listening socket.
type slot struct {
	id         int
	cur        *process
	ln         *listener.Socket // reuseport
	crashes    []time.Time      // unrequested exits within the crash window
	young      int              // consecutive exits before minUptime
	restarts   int
	removed    bool   // scaled away
	handedPast uint64 // connections handed to its exited workers
	// orphan accepts on ln while the slot has no ready worker, handing the
	// backlog to the other workers (reuseport).
	orphan *acceptLoop
}

// closeSocket stops the supervisor's accept loop on the slot's socket and
// closes the socket (reuseport).
func (sl *slot) closeSocket() {
	sl.orphan.stop()
	sl.orphan = nil
	if sl.ln != nil {
		sl.ln.Close()
	}
}

// minUptime: a worker that exits sooner died young, and its slot's next
// respawn is delayed exponentially.
const minUptime = 2 * time.Second

// Internal events.
type (
	evRespawn struct {
		sl    *slot
		cause string
	}
	evReadyDue struct{ p *process }
	evKillDue  struct{ p *process }
	evControl  struct {
		req   control.Request
		reply chan control.Response
	}
	evSnapshot struct{ reply chan snapshot }
)

// Run binds, starts the workers and supervises them until a stop signal or a
// fatal error. It returns nil after a clean stop.
func Run(cfg Config, log *zap.Logger) error {
	s := &Supervisor{
		cfg:         cfg,
		log:         log,
		events:      make(chan any, 1024),
		done:        make(chan struct{}),
		live:        map[int]*process{},
		gen:         1,
		begun:       time.Now(),
		bus:         &control.Broadcaster{},
		retired:     map[int]*slot{},
		spawnCauses: map[control.Cause]uint64{},
		exitCauses:  map[control.Cause]uint64{},
		reloads:     map[string]uint64{},
	}
	defer close(s.done)
	// Take the systemd variables now: workers must not inherit them.
	s.notify = sdnotify.New()
	sdnotify.Unsetenv()
	if _, err := exec.LookPath(cfg.Command[0]); err != nil {
		return fmt.Errorf("worker command: %w", unwrapExec(err))
	}
	if err := s.credentials(); err != nil {
		return err
	}
	if err := s.bind(); err != nil {
		return err
	}
	defer s.closeListeners()
	s.log.Info("listening", zap.String("addr", s.addr), zap.Bool("socket_activated", s.activated), zap.String("mode", cfg.Mode),
		zap.Int("workers", cfg.Workers), zap.Strings("command", cfg.Command))

	switch cfg.Mode {
	case ipc.ModeRR:
		s.bal, _ = balancer.New[*target](cfg.Balance)
		s.handoff = newHandoff(s.bal, log, cfg.QueueMax, cfg.QueueTimeout)
	case ipc.ModeReusePort:
		// Workers take their own connections; this handoff serves only the
		// backlog of slots left without a worker.
		s.bal = balancer.NewRoundRobin[*target]()
		s.handoff = newHandoff(s.bal, log, cfg.QueueMax, cfg.QueueTimeout)
	}
	// After the handoff exists (the metrics observe it) and before it
	// accepts anything.
	stopServices, err := s.startServices()
	if err != nil {
		return err
	}
	defer stopServices()

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(sigs)

	batch := cfg.Sched == "batch"
	if batch {
		if err := schedBatchProcess(); err != nil {
			// A seccomp profile may forbid it: run on under the normal policy.
			s.log.Warn("cannot use SCHED_BATCH; keeping the normal policy", zap.Error(err))
			batch = false
		}
	}
	if s.spawner, err = newSpawner(&s.owned, batch); err != nil {
		s.log.Warn("cannot use SCHED_BATCH for workers", zap.Error(err))
	}
	if cfg.Mode == ipc.ModeRR {
		loop, err := s.handoff.accept(s.ln)
		if err != nil {
			return err
		}
		s.acceptLoops = append(s.acceptLoops, loop)
	}
	for i := range cfg.Workers {
		sl := &slot{id: i + 1}
		if cfg.Mode == ipc.ModeReusePort {
			sl.ln = s.slotListeners[i]
		}
		s.slots = append(s.slots, sl)
		if err := s.start(sl, "start"); err != nil {
			s.beginStop(err)
			break
		}
	}
	return s.loop(sigs)
}

// startServices starts what runs beside the workers: the control socket,
// the metrics listener, the systemd watchdog and the reaper of orphaned
// grandchildren. The returned function stops them.
func (s *Supervisor) startServices() (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		cancel()
	}
	if path := s.controlPath(); path != "" {
		srv, err := control.Listen(path, s.log.Named("control"))
		if err != nil {
			stop()
			return nil, err
		}
		s.ctl = srv
		go srv.Serve(handler{s}, s.bus)
		stops = append(stops, func() { srv.Close() })
		s.log.Info("control socket", zap.String("path", path))
	}
	if s.cfg.Metrics != "" {
		closeMetrics, err := s.serveMetrics()
		if err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, closeMetrics)
	}
	// As PID 1 in a container, orphaned grandchildren are re-parented to
	// us; reap them without taking the exit status of our own workers.
	if err := reaper.SetSubreaper(); err != nil {
		s.log.Warn("cannot become a child subreaper", zap.Error(err))
	}
	go reaper.Run(ctx, s.owned.Has, func(pid int) {
		s.log.Info("reaped orphaned process", zap.Int("pid", pid))
		s.emit("reap", nil, "pid", pid)
	})
	return stop, nil
}

func (s *Supervisor) controlPath() string {
	switch s.cfg.Control {
	case "none":
		return ""
	case "":
		return control.DefaultPath(s.cfg.Listen)
	}
	return s.cfg.Control
}

func (s *Supervisor) loop(sigs <-chan os.Signal) error {
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		if s.phase == phaseStopping && len(s.live) == 0 {
			s.finish()
			return s.stopErr
		}
		select {
		case sig := <-sigs:
			s.onSignal(sig)
		case ev := <-s.events:
			s.onEvent(ev)
		case now := <-tick.C:
			s.onTick()
			s.keepAlive(now)
		}
	}
}

// post delivers an event to the owner goroutine; after Run returns it is
// dropped.
func (s *Supervisor) post(ev any) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

func (s *Supervisor) after(d time.Duration, ev any) {
	time.AfterFunc(d, func() { s.post(ev) })
}

func (s *Supervisor) onSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if s.phase == phaseStopping {
			s.log.Warn("second stop signal: killing workers now", zap.Stringer("signal", sig))
			if s.stopErr == nil {
				s.stopErr = errors.New("stopped by a second signal; workers killed")
			}
			for _, p := range s.live {
				p.cmd.Process.Kill()
			}
			return
		}
		s.log.Info("stopping", zap.Stringer("signal", sig), zap.Duration("grace", s.cfg.Grace))
		s.beginStop(nil)
	case syscall.SIGHUP:
		s.log.Info("reload requested", zap.Stringer("signal", sig))
		s.reload(nil)
	case syscall.SIGTTIN:
		s.scale(len(s.slots)+1, nil)
	case syscall.SIGTTOU:
		if len(s.slots) > 1 {
			s.scale(len(s.slots)-1, nil)
		}
	}
}

func (s *Supervisor) onEvent(ev any) {
	switch ev := ev.(type) {
	case evExit:
		s.onExit(ev.p, ev.err)
	case evReady:
		s.onReady(ev.p, ev.uses)
	case evBeat:
		s.onBeat(ev.p, ev.hb)
	case evMessage:
		s.log.Info("message from worker", zap.Int("slot", ev.p.slot.id), zap.Int("pid", ev.p.pid), zap.ByteString("msg", ev.msg))
		s.emit("message", ev.p, "msg", string(ev.msg))
	case evRespawn:
		if s.phase != phaseStopping && ev.sl.cur == nil && !ev.sl.removed {
			if err := s.start(ev.sl, ev.cause); err != nil {
				s.log.Error("respawn failed", zap.Int("slot", ev.sl.id), zap.Error(err))
				s.crashed(ev.sl, 0, "crash")
			}
		}
	case evReadyDue:
		s.readyDue(ev.p)
	case evKillDue:
		if p := ev.p; s.live[p.pid] == p {
			s.log.Warn("worker still running; killing it", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.String("reason", p.reason))
			p.cmd.Process.Kill()
		}
	case evControl:
		s.onControl(ev.req, ev.reply)
	case evSnapshot:
		ev.reply <- s.snapshot()
	}
}

// start spawns a worker into sl; cause says why, for logs and metrics.
func (s *Supervisor) start(sl *slot, cause string) error {
	p, err := s.spawn(sl, s.gen)
	if err != nil {
		return err
	}
	sl.cur = p
	s.track(p, cause)
	return nil
}

// track registers a new process with the owner goroutine.
func (s *Supervisor) track(p *process, cause string) {
	s.live[p.pid] = p
	s.spawnCauses[control.Cause(cause)]++
	if s.cfg.MaxRequests > 0 {
		p.maxRequests = s.cfg.MaxRequests + rand.IntN(s.cfg.MaxRequestsJitter+1)
	}
	s.log.Info("spawned worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Int("generation", p.gen), zap.String("cause", cause))
	s.emit("fork", p, "cause", cause)
	s.after(s.cfg.ReadyTimeout, evReadyDue{p: p})
}

func (s *Supervisor) readyDue(p *process) {
	if p.state != stateStarting || s.live[p.pid] != p {
		return
	}
	s.log.Error("worker not ready in time; killing it", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Duration("ready_timeout", s.cfg.ReadyTimeout))
	err := fmt.Errorf("worker %d (pid %d) not ready within -ready-timeout %s", p.slot.id, p.pid, s.cfg.ReadyTimeout)
	p.asked, p.reason = true, "ready-timeout"
	p.cmd.Process.Kill()
	if !s.failedStarting(p, err, false) && p.slot.cur == p {
		s.vacate(p.slot)
		s.crashed(p.slot, p.uptime(), "crash")
	}
}

// failedStarting handles a worker that failed (exited, or missed
// -ready-timeout) where something waits for it: the rollout or the
// scale-up that started it fails, and a supervisor still starting stops.
// It reports false when nothing waited for it.
func (s *Supervisor) failedStarting(p *process, err error, wasReady bool) bool {
	switch {
	case s.roll != nil && s.roll.next == p:
		s.rollFailed(err)
	case s.scaling != nil && s.scaling.adding[p.slot] && !wasReady:
		s.scaleFailed(p.slot, err)
	case s.phase == phaseStarting && !wasReady:
		s.beginStop(err)
	default:
		return false
	}
	return true
}

// vacate leaves sl without a current worker; in reuseport mode its socket's
// backlog goes to the other workers until a new one takes the slot.
func (s *Supervisor) vacate(sl *slot) {
	sl.cur = nil
	s.adoptBacklog(sl)
}

func (s *Supervisor) onReady(p *process, uses ipc.Features) {
	if p.state != stateStarting || s.live[p.pid] != p {
		return
	}
	p.state, p.readyAt = stateReady, time.Now()
	s.log.Info("worker ready", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Duration("boot", p.readyAt.Sub(p.started)),
		zap.Stringer("features", uses))
	s.emit("ready", p, "boot_ms", float64(p.readyAt.Sub(p.started).Microseconds())/1000)
	switch {
	case s.phase == phaseStopping:
		s.drain(p, "stop")
		return
	case s.roll != nil && s.roll.next == p:
		s.rollReady(p)
		return
	case p.slot.cur != p:
		return
	}
	s.route(p)
	if s.phase == phaseStarting && s.allReady() {
		s.phase = phaseRunning
		s.log.Info("all workers ready", zap.Int("workers", len(s.slots)), zap.Duration("startup", time.Since(s.begun)))
		s.emit("running", nil, "workers", len(s.slots), "startup_ms", float64(time.Since(s.begun).Microseconds())/1000)
		s.notify.Ready(s.statusLine())
	}
	s.scaleProgress()
}

// route lets p receive connections from the supervisor, and stops the
// supervisor accepting for p's slot.
func (s *Supervisor) route(p *process) {
	if p.t != nil {
		s.bal.Add(p.t)
		s.handoff.flush()
	}
	if p.slot.orphan != nil {
		p.slot.orphan.stop()
		p.slot.orphan = nil
	}
}

func (s *Supervisor) unroute(p *process) {
	if p.t != nil {
		s.bal.Remove(p.t)
	}
}

func (s *Supervisor) allReady() bool {
	for _, sl := range s.slots {
		if sl.cur == nil || sl.cur.state != stateReady {
			return false
		}
	}
	return true
}

func (s *Supervisor) statusLine() string {
	ready := 0
	for _, p := range s.live {
		if p.state == stateReady {
			ready++
		}
	}
	return fmt.Sprintf("%d of %d workers ready, generation %d, %s mode on %s", ready, len(s.slots), s.gen, s.cfg.Mode, s.addr)
}

func (s *Supervisor) onExit(p *process, werr error) {
	if s.live[p.pid] != p {
		return
	}
	delete(s.live, p.pid)
	s.owned.Forget(p.pid)
	wasReady := p.state == stateReady || p.state == stateDraining
	p.state = stateExited
	p.ctl.Close()
	fields := append([]zap.Field{zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Int("generation", p.gen),
		zap.Duration("uptime", p.uptime())}, exitFields(werr, p.cmd.ProcessState)...)
	s.emit("exit", p, exitEventFields(p.cmd.ProcessState, p.reason)...)
	if p.t != nil {
		p.slot.handedPast += p.t.handed.Load()
		if n := s.handoff.recover(p.t); n > 0 {
			s.log.Info("re-routed connections queued for an exited worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Int("connections", n))
		}
	}
	if p.slot.cur == p {
		s.vacate(p.slot)
	}
	defer s.scaleProgress()
	if p.asked || s.phase == phaseStopping {
		cause := p.reason
		if cause == "" {
			cause = "stop"
		}
		s.exitCauses[control.Cause(cause)]++
		s.log.Info("worker exited", append(fields, zap.String("reason", p.reason))...)
		return
	}
	s.exitCauses["crash"]++
	s.log.Warn("worker exited unexpectedly", fields...)
	why := fmt.Errorf("worker %d (pid %d) exited before it was ready: %s", p.slot.id, p.pid, exitString(p.cmd.ProcessState))
	if !s.failedStarting(p, why, wasReady) && p.slot.cur == nil && !p.slot.removed {
		s.crashed(p.slot, p.uptime(), "crash")
	}
}

// crashed schedules the respawn of sl after an unrequested exit (or a hang),
// or stops the supervisor when the slot's crash budget is spent.
func (s *Supervisor) crashed(sl *slot, uptime time.Duration, cause string) {
	now := time.Now()
	recent := sl.crashes[:0]
	for _, t := range sl.crashes {
		if now.Sub(t) < s.cfg.CrashWindow {
			recent = append(recent, t)
		}
	}
	sl.crashes = append(recent, now)
	if len(sl.crashes) > s.cfg.MaxCrashes {
		s.beginStop(fmt.Errorf("slot %d crashed %d times within %s (-max-crashes %d); giving up",
			sl.id, len(sl.crashes), s.cfg.CrashWindow, s.cfg.MaxCrashes))
		return
	}
	if uptime < minUptime {
		sl.young++
	} else {
		sl.young = 0
	}
	sl.restarts++
	delay := respawnDelay(sl.young)
	s.log.Info("respawning worker", zap.Int("slot", sl.id), zap.Duration("delay", delay), zap.Int("recent_crashes", len(sl.crashes)))
	s.emit("respawn", nil, "slot", sl.id, "delay_ms", delay.Milliseconds(), "cause", cause)
	if delay == 0 {
		s.onEvent(evRespawn{sl: sl, cause: cause})
		return
	}
	s.after(delay, evRespawn{sl: sl, cause: cause})
}

// respawnDelay is 0 for the first young death in a row, then 100ms doubling
// up to 10s.
func respawnDelay(young int) time.Duration {
	if young <= 1 {
		return 0
	}
	return min(100*time.Millisecond<<min(young-2, 10), 10*time.Second)
}

// drain asks p to finish its connections and exit, and arms its kill timer.
func (s *Supervisor) drain(p *process, reason string) {
	if p.asked {
		return
	}
	s.dismiss(p, reason)
	grace := uint32(min(s.cfg.Grace.Milliseconds(), 1<<32-1))
	if err := p.ctl.Send(ipc.AppendUint32(nil, ipc.TypeDrain, grace), nil); err != nil {
		s.log.Warn("could not ask worker to drain; killing it", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Error(err))
		p.cmd.Process.Kill()
		return
	}
	s.log.Info("draining worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.String("reason", reason))
	s.emit("drain", p, "reason", reason)
	s.after(s.cfg.Grace, evKillDue{p: p})
}

// dismiss takes p out of rotation for good: it was asked to go (reason), and
// its exit is not a crash.
func (s *Supervisor) dismiss(p *process, reason string) {
	p.asked, p.reason, p.state = true, reason, stateDraining
	s.unroute(p)
}

// beginStop stops accepting and drains every worker. err is what Run will
// return (nil for a clean stop).
func (s *Supervisor) beginStop(err error) {
	if s.phase == phaseStopping {
		return
	}
	if err != nil {
		s.log.Error("stopping", zap.Error(err))
	}
	s.notify.Stopping()
	s.emit("stop", nil)
	s.phase, s.stopErr = phaseStopping, err
	if s.roll != nil {
		s.rollFailed(errors.New("supervisor is stopping"))
	}
	if s.scaling != nil {
		for _, w := range s.scaling.waiters {
			respond(w, control.Response{Error: "scale: supervisor is stopping"})
		}
		s.scaling = nil
	}
	s.closeListeners()
	if s.handoff != nil {
		s.handoff.flush() // queued connections to whoever is still ready
	}
	for _, p := range s.live {
		s.drain(p, "stop")
	}
}

// finish runs once every worker has exited.
func (s *Supervisor) finish() {
	if s.handoff != nil {
		if n := s.handoff.closeQueue(); n > 0 {
			s.log.Warn("closed connections still queued at stop", zap.Int("connections", n))
		}
	}
	s.log.Info("stopped", zap.Duration("uptime", time.Since(s.begun)))
}

// adoptBacklog makes the supervisor accept on a reuseport slot's socket
// while the slot has no worker, so connections the kernel queued there are
// handed to the other workers instead of waiting for the respawn.
func (s *Supervisor) adoptBacklog(sl *slot) {
	if sl.ln == nil || sl.orphan != nil || s.phase == phaseStopping {
		return
	}
	loop, err := s.handoff.accept(sl.ln)
	if err != nil {
		s.log.Error("cannot adopt the backlog of a slot", zap.Int("slot", sl.id), zap.Error(err))
		return
	}
	sl.orphan = loop
}

// bind creates the listening sockets. The supervisor keeps them as bare
// descriptors (listener.Socket), outside its runtime poller: see Socket.
func (s *Supervisor) bind() error {
	inherited, err := listener.Inherited()
	switch {
	case err == nil && s.cfg.Mode == ipc.ModeReusePort:
		for _, l := range inherited {
			l.Close()
		}
		return usagef("socket activation (LISTEN_FDS) cannot be used with -mode reuseport: it needs one socket per worker, bound by the supervisor; use -mode rr or shared")
	case err == nil:
		for _, l := range inherited[1:] {
			s.log.Warn("ignoring extra inherited socket", zap.Stringer("addr", l.Addr()))
			l.Close()
		}
		sock, err := listener.Detach(inherited[0])
		if err != nil {
			return err
		}
		s.ln, s.addr, s.activated = sock, sock.Addr().String(), true
		return nil
	case !errors.Is(err, listener.ErrNotActivated):
		return err
	}
	if s.cfg.Mode == ipc.ModeReusePort {
		lns, err := listener.ListenReusePort(s.cfg.Listen, s.cfg.Workers)
		if err != nil {
			return err
		}
		if s.slotListeners, err = listener.DetachAll(lns); err != nil {
			return err
		}
		s.addr = s.slotListeners[0].Addr().String()
		return nil
	}
	ln, err := listener.Listen(s.cfg.Listen)
	if err != nil {
		return err
	}
	if s.ln, err = listener.Detach(ln); err != nil {
		return err
	}
	s.addr = s.ln.Addr().String()
	return nil
}

func (s *Supervisor) closeListeners() {
	if s.ln != nil {
		s.ln.Close()
	}
	for _, l := range s.acceptLoops {
		l.stop()
	}
	s.acceptLoops = nil
	for _, sl := range s.slots {
		sl.closeSocket()
	}
	for id, sl := range s.retired {
		sl.closeSocket()
		delete(s.retired, id)
	}
	for _, l := range s.slotListeners {
		l.Close()
	}
}

package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
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
	ln            *net.TCPListener   // rr and shared
	slotListeners []*net.TCPListener // reuseport, one per slot
	acceptLoops   []*acceptLoop      // rr: on ln
	activated     bool               // ln came from systemd (LISTEN_FDS)
	bal           balancer.Balancer[*target]
	handoff       *handoff
	spawner       *spawner

	events chan any
	done   chan struct{}

	slots   []*slot
	live    map[int]*process // by pid, every process not yet waited for
	phase   phase
	gen     int
	begun   time.Time
	stopErr error
	forced  bool
}

// slot is a worker position, 1..N. Its worker's replacements keep its id
// (PREFORK_WORKER_ID) and, in reuseport mode, its listening socket.
type slot struct {
	id      int
	cur     *process
	ln      *net.TCPListener // reuseport
	crashes []time.Time      // unrequested exits within the crash window
	young   int              // consecutive exits before minUptime
	waiting bool             // a respawn is scheduled
	// orphan accepts on ln while the slot has no ready worker, handing the
	// backlog to the other workers (reuseport).
	orphan *acceptLoop
}

// minUptime: a worker that exits sooner died young, and its slot's next
// respawn is delayed exponentially.
const minUptime = 2 * time.Second

// Internal events.
type (
	evRespawn  struct{ sl *slot }
	evReadyDue struct{ p *process }
	evKillDue  struct{ p *process }
)

// Run binds, starts the workers and supervises them until a stop signal or a
// fatal error. It returns nil after a clean stop.
func Run(cfg Config, log *zap.Logger) error {
	s := &Supervisor{
		cfg:    cfg,
		log:    log,
		events: make(chan any, 1024),
		done:   make(chan struct{}),
		live:   map[int]*process{},
		gen:    1,
		begun:  time.Now(),
	}
	defer close(s.done)
	if _, err := exec.LookPath(cfg.Command[0]); err != nil {
		return fmt.Errorf("worker command: %w", unwrapExec(err))
	}
	if err := s.bind(); err != nil {
		return err
	}
	defer s.closeListeners()
	s.log.Info("listening", zap.String("addr", s.addr), zap.Bool("socket_activated", s.activated), zap.String("mode", cfg.Mode),
		zap.Int("workers", cfg.Workers), zap.Strings("command", cfg.Command))

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	s.spawner = newSpawner()
	if cfg.Mode == ipc.ModeRR {
		s.bal, _ = balancer.New[*target](cfg.Balance)
		s.handoff = newHandoff(s.bal, log, cfg.QueueMax, cfg.QueueTimeout)
		loop, err := s.handoff.accept(s.ln)
		if err != nil {
			return err
		}
		s.acceptLoops = append(s.acceptLoops, loop)
	}
	if cfg.Mode == ipc.ModeReusePort {
		// Workers take their own connections; this handoff only serves
		// the backlog of slots left without a ready worker.
		s.bal = balancer.NewRoundRobin[*target]()
		s.handoff = newHandoff(s.bal, log, cfg.QueueMax, cfg.QueueTimeout)
	}
	for i := range cfg.Workers {
		sl := &slot{id: i + 1}
		if cfg.Mode == ipc.ModeReusePort {
			sl.ln = s.slotListeners[i]
		}
		s.slots = append(s.slots, sl)
		if err := s.start(sl); err != nil {
			s.beginStop(err)
			break
		}
	}
	return s.loop(sigs)
}

func (s *Supervisor) loop(sigs <-chan os.Signal) error {
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
			s.forced = true
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
	}
}

func (s *Supervisor) onEvent(ev any) {
	switch ev := ev.(type) {
	case evExit:
		s.onExit(ev.p, ev.err)
	case evReady:
		s.onReady(ev.p)
	case evBeat:
		ev.p.beat, ev.p.beatAt = ev.hb, time.Now()
	case evMessage:
		s.log.Info("message from worker", zap.Int("slot", ev.p.slot.id), zap.Int("pid", ev.p.pid), zap.ByteString("msg", ev.msg))
	case evRespawn:
		ev.sl.waiting = false
		if s.phase != phaseStopping && ev.sl.cur == nil {
			if err := s.start(ev.sl); err != nil {
				s.log.Error("respawn failed", zap.Int("slot", ev.sl.id), zap.Error(err))
				s.crashed(ev.sl, 0)
			}
		}
	case evReadyDue:
		p := ev.p
		if p.state == stateStarting && s.live[p.pid] == p {
			s.log.Error("worker not ready in time; killing it", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Duration("ready_timeout", s.cfg.ReadyTimeout))
			if s.phase == phaseStarting {
				s.beginStop(fmt.Errorf("worker %d (pid %d) not ready within -ready-timeout %s", p.slot.id, p.pid, s.cfg.ReadyTimeout))
			}
			p.cmd.Process.Kill()
		}
	case evKillDue:
		if p := ev.p; s.live[p.pid] == p {
			s.log.Warn("worker still running after grace; killing it", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Duration("grace", s.cfg.Grace))
			p.cmd.Process.Kill()
		}
	}
}

// start spawns a worker into sl.
func (s *Supervisor) start(sl *slot) error {
	p, err := s.spawn(sl, s.gen)
	if err != nil {
		return err
	}
	sl.cur = p
	s.live[p.pid] = p
	s.log.Info("spawned worker", zap.Int("slot", sl.id), zap.Int("pid", p.pid), zap.Int("generation", p.gen))
	s.after(s.cfg.ReadyTimeout, evReadyDue{p: p})
	return nil
}

func (s *Supervisor) onReady(p *process) {
	if p.state != stateStarting || s.live[p.pid] != p {
		return
	}
	p.state, p.readyAt = stateReady, time.Now()
	s.log.Info("worker ready", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Duration("boot", p.readyAt.Sub(p.started)))
	if s.phase == phaseStopping {
		s.drain(p, "stop")
		return
	}
	if p.t != nil {
		s.bal.Add(p.t)
		s.handoff.flush()
	}
	if p.slot.orphan != nil && p.slot.cur == p {
		p.slot.orphan.stop()
		p.slot.orphan = nil
	}
	if s.phase == phaseStarting && s.allReady() {
		s.phase = phaseRunning
		s.log.Info("all workers ready", zap.Int("workers", len(s.slots)), zap.Duration("startup", time.Since(s.begun)))
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

func (s *Supervisor) onExit(p *process, werr error) {
	if s.live[p.pid] != p {
		return
	}
	delete(s.live, p.pid)
	wasReady := p.state == stateReady || p.state == stateDraining
	p.state = stateExited
	p.ctl.Close()
	fields := append([]zap.Field{zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Int("generation", p.gen),
		zap.Duration("uptime", p.uptime())}, exitFields(werr, p.cmd.ProcessState)...)
	if p.t != nil {
		if n := s.handoff.recover(p.t); n > 0 {
			s.log.Info("re-routed connections queued for an exited worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Int("connections", n))
		}
	}
	if p.slot.cur == p {
		p.slot.cur = nil
		s.adoptBacklog(p.slot)
	}
	if p.asked || s.phase == phaseStopping {
		s.log.Info("worker exited", append(fields, zap.String("reason", p.reason))...)
		return
	}
	s.log.Warn("worker exited unexpectedly", fields...)
	if s.phase == phaseStarting && !wasReady {
		s.beginStop(fmt.Errorf("worker %d (pid %d) exited before it was ready: %s", p.slot.id, p.pid, exitString(p.cmd.ProcessState)))
		return
	}
	s.crashed(p.slot, p.uptime())
}

// crashed schedules the respawn of sl after an unrequested exit, or stops
// the supervisor when the slot's crash budget is spent.
func (s *Supervisor) crashed(sl *slot, uptime time.Duration) {
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
	delay := respawnDelay(sl.young)
	s.log.Info("respawning worker", zap.Int("slot", sl.id), zap.Duration("delay", delay), zap.Int("recent_crashes", len(sl.crashes)))
	sl.waiting = true
	if delay == 0 {
		s.onEvent(evRespawn{sl: sl})
		return
	}
	s.after(delay, evRespawn{sl: sl})
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
	p.asked, p.reason = true, reason
	if p.t != nil {
		s.bal.Remove(p.t)
	}
	p.state = stateDraining
	grace := uint32(min(s.cfg.Grace.Milliseconds(), 1<<32-1))
	if err := p.ctl.Send(ipc.AppendUint32(nil, ipc.TypeDrain, grace), nil); err != nil {
		s.log.Warn("could not ask worker to drain; killing it", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Error(err))
		p.cmd.Process.Kill()
		return
	}
	s.log.Info("draining worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.String("reason", reason))
	s.after(s.cfg.Grace, evKillDue{p: p})
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
	s.phase, s.stopErr = phaseStopping, err
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
		s.ln, s.addr, s.activated = inherited[0], inherited[0].Addr().String(), true
		return nil
	case !errors.Is(err, listener.ErrNotActivated):
		return err
	}
	if s.cfg.Mode == ipc.ModeReusePort {
		lns, err := listener.ListenReusePort(s.cfg.Listen, s.cfg.Workers)
		if err != nil {
			return err
		}
		s.slotListeners = lns
		s.addr = lns[0].Addr().String()
		return nil
	}
	ln, err := listener.Listen(s.cfg.Listen)
	if err != nil {
		return err
	}
	s.ln, s.addr = ln, ln.Addr().String()
	return nil
}

func (s *Supervisor) closeListeners() {
	if s.ln != nil {
		s.ln.Close()
	}
	for _, l := range s.acceptLoops {
		l.stop()
	}
	for _, sl := range s.slots {
		sl.orphan.stop()
		sl.orphan = nil
	}
	for _, l := range s.slotListeners {
		l.Close()
	}
}

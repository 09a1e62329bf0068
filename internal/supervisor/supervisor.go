package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
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

func (p phase) String() string { return [...]string{"starting", "running", "stopping"}[p] }

// Supervisor owns the worker processes. Every field below belongs to the
// goroutine running loop (the owner); everything else talks to it through
// events.
type Supervisor struct {
	cfg    Config
	log    *zap.Logger
	sys    system
	mode   mode
	proto  protocol // -worker-protocol
	owned  reaper.Owned
	cred   *syscall.Credential // -user/-group
	notify *sdnotify.Notifier  // nil: not under systemd
	bus    publisher

	sigs   <-chan os.Signal // set by loop; an upgrade takes what it queued
	events chan any         // from other goroutines
	// asks are the questions other goroutines wait on (ask): ctl
	// requests, metrics scrapes, Engine calls. The owner takes them before
	// what waits in events, which a flood of worker messages can fill.
	asks  chan any
	queue []any // from the owner goroutine itself: see enqueue
	done  chan struct{}
	// stopping is closed when the stop begins (beginStop).
	stopping chan struct{}

	phase   phase
	gen     int
	begun   time.Time
	stopErr error
	slots   []*slot
	live    map[int]*process // by pid, every process not yet waited for

	reloader     reloader        // reloads and recycles, slot by slot (rollout.go)
	releases     releases        // what each generation runs, kept for rollback (release.go)
	scaler       scaler          // scaling up and down (scale.go)
	forks        forks           // Engine.Fork and the respawn policy (fork.go)
	readyWaiters []chan struct{} // Engine.Ready calls waiting for start-up

	health health // heartbeats, hangs and freezes (health.go)

	counts counters
	// rebalancedAt: when rebalancing last asked for connections (rebalance.go).
	rebalancedAt time.Time

	// Messages to an Engine's reader (messages.go).
	messages messages

	// In-place upgrades (upgrade.go).
	up upgrader
	// The control socket, metrics, admin, reaper and watchdog (services.go).
	svc services
}

// counters are cumulative, for metrics.
type counters struct {
	spawns   map[control.Cause]uint64
	exits    map[control.Cause]uint64
	reloads  map[string]uint64
	verdicts map[string]uint64 // canary verdicts: pass, fail, insufficient
	protocol uint64            // frames from workers that broke the protocol
	freezes  uint64            // owner-loop stalls detected
	// rebalanceAsks counts idle connections workers were asked to give
	// back to rebalance (rebalance.go).
	rebalanceAsks uint64
}

// newSupervisor makes a supervisor over sys and m, with no worker yet.
func newSupervisor(cfg Config, log *zap.Logger, sys system, m mode) *Supervisor {
	s := &Supervisor{
		cfg:      cfg,
		log:      log,
		sys:      sys,
		mode:     m,
		proto:    newProtocol(cfg),
		bus:      discard{},
		events:   make(chan any, 1024),
		asks:     make(chan any, 16),
		done:     make(chan struct{}),
		stopping: make(chan struct{}),
		gen:      1,
		begun:    sys.Now(),
		live:     map[int]*process{},
		counts: counters{
			spawns:   map[control.Cause]uint64{},
			exits:    map[control.Cause]uint64{},
			reloads:  map[string]uint64{},
			verdicts: map[string]uint64{},
		},
	}
	s.up = upgrader{s: s, kept: &keptFDs{}}
	s.svc = services{s: s}
	s.forks = forks{s: s}
	s.reloader = reloader{s: s}
	s.releases = releases{s: s}
	s.scaler = scaler{s: s}
	s.messages = messages{s: s}
	s.health = health{s: s}
	return s
}

// run supervises from a fresh start, or with st from the state an
// in-place upgrade left (sp is then the spawner the main thread serves:
// see Start). started, if not nil, gets the Engine once the mode accepts
// and before the first worker starts or is re-adopted, so that it misses
// no event.
func run(cfg Config, log *zap.Logger, st *upgradeState, sp *spawner, started func(*Engine)) error {
	env := os.Environ()
	exe, exeErr := os.Executable()
	// /proc/self/exe opens this image's own file, even if its path has
	// been replaced (by the new release) or removed since.
	exeFile, exeErr2 := os.Open("/proc/self/exe")
	if exeErr2 == nil {
		defer exeFile.Close()
	} else if exeErr == nil {
		exeErr = exeErr2
	}
	// Take the systemd variables now: workers must not inherit them.
	notify := sdnotify.New()
	sdnotify.Unsetenv()
	if _, err := exec.LookPath(cfg.Command[0]); err != nil {
		return fmt.Errorf("worker command: %w", unwrapExec(err))
	}
	cred, err := credentials(cfg.User, cfg.Group)
	if err != nil {
		return err
	}
	var m mode
	kept := keptOf(st)
	defer kept.close() // what no part took
	if st != nil {
		m, err = restoreMode(cfg, log, st, kept)
	} else {
		m, err = newMode(cfg, log)
	}
	if err != nil {
		return err
	}
	defer m.stopAccepting()
	for _, l := range m.listeners() {
		log.Info("listening", zap.String("addr", l.addr), zap.Bool("socket_activated", l.activated), zap.String("mode", cfg.Mode),
			zap.Int("workers", cfg.Workers), zap.Strings("command", cfg.Command))
	}

	batch := cfg.Sched == "batch"
	if batch {
		if err := schedBatchProcess(); err != nil {
			// A seccomp profile may forbid it: run on under the normal policy.
			log.Warn("cannot use SCHED_BATCH; keeping the normal policy", zap.Error(err))
			batch = false
		}
	}
	osys := osSystem{}
	s := newSupervisor(cfg, log, &osys, m)
	s.up.kept = kept
	bus := &control.Broadcaster{}
	s.bus = bus
	defer close(s.done)
	s.notify, s.cred, s.up.exe, s.up.exeFile, s.up.env = notify, cred, exe, exeFile, env
	s.up.rehearse = s.up.rehearseChild
	if exeErr != nil {
		log.Warn("cannot tell this binary's path; ctl upgrade needs one", zap.Error(exeErr))
	}
	if sp != nil {
		sp.owned, osys.spawner = &s.owned, sp
		s.up.env = st.Env
		s.up.restoreState(st)
	} else if osys.spawner, err = newSpawner(&s.owned, batch); err != nil {
		log.Warn("cannot use SCHED_BATCH for workers", zap.Error(err))
	}
	// After the mode exists (the metrics observe its handoff) and before
	// it accepts anything.
	stopServices, err := s.svc.startServices(bus)
	if err != nil {
		return err
	}
	defer stopServices()
	kept.close()      // the services took theirs
	sigs := earlySigs // the image an upgrade started: caught since init
	if sigs == nil {
		sigs = make(chan os.Signal, 16)
		signal.Notify(sigs, supervisorSignals...)
	}
	defer signal.Stop(sigs)
	if err := m.startAccepting(); err != nil {
		return err
	}
	if started != nil {
		started(&Engine{s: s, bus: bus})
	}
	if st != nil {
		// Accepting first, to keep the gap short: what it accepts before
		// the workers are routed queues behind rr's restored pending
		// queue, and goes to them in that order.
		s.up.acceptGap = time.Since(st.StoppedAt)
		if err := s.up.adopt(st); err != nil {
			return err
		}
		s.up.resumed(st)
		// The kept release did not survive the execve (a close-on-exec
		// memfd): what is on disk now serves as the one to roll back to.
		s.releases.keep(s.gen)
	} else {
		s.startWorkers()
	}
	return s.loop(sigs)
}

// startWorkers fills the first -workers slots.
func (s *Supervisor) startWorkers() {
	s.releases.keep(s.gen) // the release a first canary rolls back to
	for i := range s.cfg.Workers {
		sl := &slot{id: i + 1}
		s.slots = append(s.slots, sl)
		if err := s.start(sl, control.CauseStart); err != nil {
			s.beginStop(err)
			return
		}
	}
	if s.cfg.Workers == 0 { // a program's primary that will Fork its workers
		s.running()
	}
}

// allReady reports whether every slot has a ready worker.
func (s *Supervisor) allReady() bool {
	for _, sl := range s.slots {
		if sl.parked {
			continue
		}
		if sl.cur == nil || sl.cur.state != control.StateReady {
			return false
		}
	}
	return true
}

func (s *Supervisor) statusLine() string {
	ready := 0
	for _, p := range s.live {
		if p.state == control.StateReady {
			ready++
		}
	}
	return fmt.Sprintf("%d of %d workers ready, generation %d, %s mode on %s", ready, len(s.slots), s.gen, s.cfg.Mode, addrOf(s.mode))
}

// publisher takes the supervisor's events: a control.Broadcaster, which
// hands them to `ctl events` subscribers.
type publisher interface{ Publish(control.Event) }

type discard struct{}

func (discard) Publish(control.Event) {}

// emit publishes an operator event to `supervisor ctl events` subscribers.
// p, if not nil, is the worker it is about: its slot, pid and generation.
func (s *Supervisor) emit(p *process, e control.Event) {
	if p != nil {
		e.Slot, e.PID, e.Generation = p.slot.id, p.pid, p.gen
	}
	s.bus.Publish(e) // Publish stamps the time
}

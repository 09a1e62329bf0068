package supervisor

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// slot is a worker position, 1..N. Its worker's replacements keep its id
// (PREFORK_WORKER_ID); in reuseport mode the mode keeps its listening
// socket by that id.
type slot struct {
	id         int
	cur        *process // the worker that serves the slot; nil while vacant
	budget     crashBudget
	restarts   int
	removed    bool     // scaled away
	handedPast uint64   // connections handed to its exited workers
	env        []string // added to its workers' environment (Engine.Fork)
	parked     bool     // left without a worker until a Fork takes it (fork.go)
	forks      []forkReq
	// A recycle whose new worker failed is tried again from recycleAt.
	recycleFails int
	recycleAt    time.Time
}

// minUptime: a worker that exits sooner died young, and its slot's next
// respawn is delayed exponentially.
const minUptime = 2 * time.Second

// crashBudget is a slot's record of unrequested exits: how many fell within
// the crash window, and how many workers in a row died young.
type crashBudget struct {
	crashes []time.Time
	young   int
}

// crash records an unrequested exit at now of a worker that ran for
// uptime. It returns how long to wait before the respawn and how many
// crashes fell within window, or spent when that is more than max.
func (b *crashBudget) crash(now time.Time, uptime time.Duration, max int, window time.Duration) (delay time.Duration, recent int, spent bool) {
	kept := b.crashes[:0]
	for _, t := range b.crashes {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	b.crashes = append(kept, now)
	if len(b.crashes) > max {
		return 0, len(b.crashes), true
	}
	if uptime < minUptime {
		b.young++
	} else {
		b.young = 0
	}
	return respawnDelay(b.young), len(b.crashes), false
}

// respawnDelay is 0 for the first young death in a row, then 100ms doubling
// up to 10s.
func respawnDelay(young int) time.Duration {
	if young <= 1 {
		return 0
	}
	return min(100*time.Millisecond<<min(young-2, 10), 10*time.Second)
}

// crashed schedules the respawn of sl after an unrequested exit (or a
// replacement), or stops the supervisor when the slot's crash budget is
// spent.
// Under the manual policy the program replaces it, if it wants to: the
// slot waits for a Fork, and there is no budget to spend.
func (s *Supervisor) crashed(sl *slot, uptime time.Duration, cause control.Cause) {
	if s.forks.manual() {
		s.forks.park(sl)
		return
	}
	delay, recent, spent := sl.budget.crash(s.sys.Now(), uptime, s.cfg.MaxCrashes, s.cfg.CrashWindow)
	if spent {
		s.beginStop(fmt.Errorf("slot %d crashed %d times within %s (-max-crashes %d): %w",
			sl.id, recent, s.cfg.CrashWindow, s.cfg.MaxCrashes, ErrCrashBudget))
		return
	}
	sl.restarts++
	s.log.Info("respawning worker", zap.Int("slot", sl.id), zap.Duration("delay", delay), zap.Int("recent_crashes", recent))
	s.emit(nil, control.Event{Kind: control.EventRespawn, Slot: sl.id, DelayMS: delay.Milliseconds(), Cause: cause})
	if delay == 0 {
		s.enqueue(evRespawn{sl: sl, cause: cause})
		return
	}
	s.after(delay, evRespawn{sl: sl, cause: cause})
}

// respawn fills sl again, unless it was filled, removed or the supervisor
// is stopping meanwhile. A failed start counts as a crash.
func (s *Supervisor) respawn(sl *slot, cause control.Cause) {
	if s.phase == phaseStopping || sl.cur != nil || sl.removed {
		return
	}
	if err := s.start(sl, cause); err != nil {
		s.log.Error("respawn failed", zap.Int("slot", sl.id), zap.Error(err))
		s.crashed(sl, 0, control.CauseCrash)
	}
}

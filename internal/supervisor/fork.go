package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/settings"
)

// Respawn policies (Config.Respawn).
const (
	RespawnAuto   = settings.RespawnAuto
	RespawnManual = settings.RespawnManual
)

// forks are the workers the program asks for (Engine.Fork) and the
// respawn policy: the field forks of a Supervisor, owned by its owner
// goroutine.
type forks struct {
	s *Supervisor

	forkQueue  []forkReq // Forks waiting for a reload or scale to end
	claims     []claim   // respawns a Fork may take for its own
	forkWarned bool      // the claim has been explained in the log
}

// manual reports whether the program, not the supervisor, replaces
// workers that exit (Node's policy).
func (fk *forks) manual() bool { return fk.s.cfg.Respawn == RespawnManual }

// claimWindow is how long after a worker's exit, which the supervisor
// answered with a respawn, a Fork is taken for the program's own answer to
// that exit (Node's cluster.on('exit', () => cluster.fork())): it gets the
// respawned worker rather than a slot more. Generous: the program's
// reader of events may lag, and each Fork it makes waits for a ready
// worker before it reads the next exit.
const claimWindow = 30 * time.Second

// claim is a respawn that a Fork may take for its own.
type claim struct {
	sl *slot
	at time.Time
}

// forkReq is a Fork waiting for its worker to be ready.
type forkReq struct {
	env   []string
	reply chan forkReply
}

type forkReply struct {
	slot, pid int
	err       error
}

// Fork starts a worker whose environment adds env (KEY=VALUE entries) to
// the supervisor's, and waits until it is ready: Node's cluster.fork(env).
// The worker takes the lowest slot that has none (one whose worker exited
// under the manual policy, or that failed to start), else a new one, which
// keeps env for its replacements. During start-up it runs at once; while a
// reload or scale runs it waits for its end. With the automatic policy, a
// Fork within claimWindow of an exit the supervisor answered with a
// respawn is taken for the program's answer to that exit: it returns the
// respawned worker, so that the cluster does not grow. It returns the
// worker's slot and pid.
func (e *Engine) Fork(ctx context.Context, env []string) (slot, pid int, err error) {
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || k == "":
			return 0, 0, fmt.Errorf("supervisor: fork: %q is not KEY=VALUE", kv)
		case strings.HasPrefix(k, ipc.EnvPrefix):
			return 0, 0, fmt.Errorf("supervisor: fork: %s: %s variables are the supervisor's", k, ipc.EnvPrefix)
		}
	}
	req := forkReq{env: env, reply: make(chan forkReply, 1)}
	if _, err := call(ctx, e, func(s *Supervisor) bool { s.forks.fork(req); return true }); err != nil {
		return 0, 0, err
	}
	select {
	case r := <-req.reply:
		return r.slot, r.pid, r.err
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("supervisor: fork: %w", ctx.Err())
	case <-e.done:
		return 0, 0, fmt.Errorf("supervisor: fork: %w", ErrStopped)
	}
}

// fork carries out req, or queues it behind the reload or scale that runs.
func (fk *forks) fork(req forkReq) {
	if fk.s.phase == phaseStopping {
		req.reply <- forkReply{err: fmt.Errorf("supervisor: fork: %w", errStopping)}
		return
	}
	if sl := fk.claimRespawn(); sl != nil {
		fk.waitReady(sl, req)
		return
	}
	if fk.s.reloader.roll != nil || fk.s.scaler.scaling != nil {
		fk.forkQueue = append(fk.forkQueue, req)
		return
	}
	var sl *slot
	for _, x := range fk.s.slots {
		if x.parked {
			sl = x
			break
		}
	}
	if sl == nil {
		sl = &slot{id: len(fk.s.slots) + 1}
		fk.s.slots = append(fk.s.slots, sl)
	}
	sl.parked, sl.env = false, req.env
	if err := fk.s.start(sl, control.CauseFork); err != nil {
		fk.park(sl)
		req.reply <- forkReply{err: fmt.Errorf("supervisor: fork: %w", err)}
		return
	}
	sl.cur.forked = true
	fk.waitReady(sl, req)
}

// claimable records, under the automatic policy, that the exit of p
// (cause) is answered by a respawn of its slot, which a Fork soon after
// may take for its own. Stops and scale-downs leave no slot to take.
func (fk *forks) claimable(p *process, cause control.Cause, now time.Time) {
	if fk.manual() || p.slot.removed || p.slot.parked || fk.s.phase == phaseStopping || cause == control.CauseScale {
		return
	}
	kept := fk.claims[:0]
	for _, c := range fk.claims {
		if now.Sub(c.at) <= claimWindow {
			kept = append(kept, c)
		}
	}
	fk.claims = append(kept, claim{sl: p.slot, at: now})
}

// claimRespawn takes the oldest respawn still within claimWindow, under
// the automatic policy, and logs once how to have the program decide.
func (fk *forks) claimRespawn() *slot {
	now := fk.s.sys.Now()
	for len(fk.claims) > 0 {
		c := fk.claims[0]
		fk.claims = fk.claims[1:]
		if now.Sub(c.at) > claimWindow || c.sl.removed || c.sl.parked {
			continue
		}
		if !fk.forkWarned {
			fk.forkWarned = true
			fk.s.log.Warn("Fork right after a worker's exit: the primary respawns workers itself, so this Fork returns the respawned worker "+
				"instead of adding one; to decide yourself, as in Node, set Settings.Respawn to RespawnManual", zap.Int("slot", c.sl.id))
		}
		return c.sl
	}
	return nil
}

// waitReady answers req once sl's worker is ready.
func (fk *forks) waitReady(sl *slot, req forkReq) {
	if p := sl.cur; p != nil && p.state == control.StateReady {
		req.reply <- forkReply{slot: sl.id, pid: p.pid}
		return
	}
	sl.forks = append(sl.forks, req)
}

// forkReady answers the Forks waiting for sl, whose worker p is ready.
func (fk *forks) forkReady(sl *slot, p *process) {
	for _, req := range sl.forks {
		req.reply <- forkReply{slot: sl.id, pid: p.pid}
	}
	sl.forks = nil
}

// forkFailed answers the Forks waiting for sl, whose worker failed to
// start; the slot is left without one. It reports false if none waited.
func (fk *forks) forkFailed(sl *slot, err error) bool {
	if len(sl.forks) == 0 {
		return false
	}
	for _, req := range sl.forks {
		req.reply <- forkReply{err: fmt.Errorf("supervisor: fork: %w", err)}
	}
	sl.forks = nil
	fk.park(sl)
	return true
}

// park leaves sl without a worker until a Fork takes it: the manual
// policy's answer to an exit, and a failed Fork's slot.
func (fk *forks) park(sl *slot) {
	sl.parked = true
	if sl.cur != nil {
		fk.s.vacate(sl)
	}
	if fk.s.phase == phaseStarting && fk.s.allReady() {
		fk.s.running()
	}
}

// respawnAfter replaces sl's worker, which left (cause) without crashing,
// by the policy: at once, or not at all under the manual one.
func (fk *forks) respawnAfter(sl *slot, cause control.Cause) {
	if fk.s.phase == phaseStopping {
		return
	}
	if sl.cur != nil {
		fk.s.vacate(sl)
	}
	if fk.manual() {
		fk.park(sl)
		return
	}
	fk.s.enqueue(evRespawn{sl: sl, cause: cause})
}

// runForks carries out the Forks queued behind a reload or scale.
func (fk *forks) runForks() {
	q := fk.forkQueue
	fk.forkQueue = nil
	for _, req := range q {
		fk.fork(req)
	}
}

// endForks fails the Forks still waiting when the supervisor stops.
func (fk *forks) endForks() {
	for _, req := range fk.forkQueue {
		req.reply <- forkReply{err: fmt.Errorf("supervisor: fork: %w", errStopping)}
	}
	fk.forkQueue = nil
	for _, sl := range fk.s.slots {
		for _, req := range sl.forks {
			req.reply <- forkReply{err: fmt.Errorf("supervisor: fork: %w", errStopping)}
		}
		sl.forks = nil
	}
}

// Ready waits until start-up is over: every worker the supervisor started
// with, and every Fork made meanwhile, is ready (at once with none). It
// returns the error that stopped the supervisor first, if it did.
func (e *Engine) Ready(ctx context.Context) error {
	ready := make(chan struct{}, 1)
	ok, err := call(ctx, e, func(s *Supervisor) bool {
		if s.phase == phaseStarting {
			s.readyWaiters = append(s.readyWaiters, ready)
			return false
		}
		return s.phase == phaseRunning
	})
	switch {
	case err != nil:
		return err
	case ok:
		return nil
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-e.done:
		if e.err != nil {
			return e.err
		}
		return ErrStopped
	}
}

// ErrCrashBudget is what a supervisor stopped by a slot's spent crash
// budget returns, for errors.Is.
var ErrCrashBudget = errors.New("crash budget spent; giving up")

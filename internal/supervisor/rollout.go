package supervisor

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// rollout replaces workers slot by slot, the way a reload and a recycle do:
// for each slot a new worker starts, and only once it is ready does it take
// the slot and the old worker drain. A new worker that fails to become ready
// stops the rollout; the old workers keep serving.
type rollout struct {
	reason  control.Cause // reload or recycle
	note    string        // what the reload changed, before its result in replies
	gen     int
	todo    []*slot
	next    *process // the new worker starting now
	done    int
	began   time.Time
	waiters []chan control.Response
	// recycled is the slot a recycle replaces the worker of; nil for a
	// reload.
	recycled *slot
	// canary: this reload's canary policy (canary.go); nil for a plain
	// rolling reload and a recycle.
	canary *canary
}

// recycleBackoff is how long a slot waits after its nth failed recycle in a
// row before the next: 2s doubling up to 5 minutes.
func recycleBackoff(n int) time.Duration {
	return min(time.Second<<min(n, 10), 5*time.Minute)
}

// event is the kind of event a rollout's steps are reported as.
func (r *rollout) event() control.EventKind {
	switch r.reason {
	case control.CauseRecycle:
		return control.EventRecycle
	case control.CauseRollback:
		return control.EventRollback
	}
	return control.EventReload
}

// reloader carries out reloads and recycles: the rollout that runs, and
// the reloads asked for while it could not start. It is the field
// reloader of a Supervisor, owned by its owner goroutine.
type reloader struct {
	s *Supervisor

	roll *rollout // nil: none runs
	// Reloads that arrived while they could not run, carried out as soon
	// as they can: during start-up or during another rollout.
	reloadAfter  []chan control.Response
	afterOpts    reloadOptions // the options of the last reload queued
	reloadQueued bool
	lastGen      int     // the last generation a reload made, rolled back or not
	last         *canary // the last canary, once over: for ctl status
	// note is what the configuration file changed for the reloads not
	// started yet: the next rollout's replies begin with it.
	note string
}

// reload starts a rolling reload of every slot into a new generation; reply
// (may be nil) gets the result when it is over. A reload asked for while
// the workers are still starting starts once they are ready, and one asked
// for during another rollout starts after it, so that it picks up a binary
// replaced meanwhile.
func (rl *reloader) reload(reply chan control.Response, opts reloadOptions) {
	switch {
	case rl.s.phase == phaseStopping:
		respond(reply, control.Response{Error: "reload: supervisor is stopping"})
		return
	case rl.s.phase == phaseStarting && reply != nil:
		respond(reply, control.Response{Error: "reload: workers are still starting"})
		return
	case rl.s.phase == phaseStarting:
		rl.reloadQueued = true
		rl.s.log.Info("reload deferred until the workers are ready")
		rl.s.emit(nil, control.Event{Kind: control.EventDeferred, Request: string(control.CmdReload), Until: "running"})
		return
	case rl.roll != nil || rl.s.scaler.scaling != nil:
		rl.reloadAfter, rl.afterOpts = append(rl.reloadAfter, reply), opts
		rl.s.log.Info("reload queued behind the operation in progress")
		rl.s.emit(nil, control.Event{Kind: control.EventDeferred, Request: string(control.CmdReload), Until: "idle"})
		return
	}
	// It answers the requests queued behind the operation that just ended
	// too, however it ends, even before rollStep returns.
	waiters := rl.reloadAfter
	rl.reloadAfter = nil
	note := rl.note
	rl.note = ""
	if reply != nil {
		waiters = append(waiters, reply)
	}
	refusal := rl.s.releases.refuse(opts.force)
	if refusal == nil && opts.canary > 0 {
		if why := rl.canaryRefusal(opts.canary); why != "" {
			refusal = errors.New(why)
		}
	}
	if refusal != nil {
		rl.s.log.Warn("reload refused", zap.Error(refusal))
		rl.s.emit(nil, control.Event{Kind: control.EventReload, Step: control.StepFailed, Error: refusal.Error()})
		for _, w := range waiters {
			respond(w, control.Response{Error: note + refusal.Error()})
		}
		return
	}
	rl.lastGen = max(rl.lastGen, rl.s.gen) + 1
	r := &rollout{reason: control.CauseReload, gen: rl.lastGen, todo: append([]*slot(nil), rl.s.slots...), began: rl.s.sys.Now(), waiters: waiters, note: note}
	rel := rl.s.releases.keep(r.gen)
	if opts.canary > 0 {
		rl.startCanary(r, opts, rel) // s.gen stays the old one until the verdict
	} else {
		rl.s.gen = r.gen
	}
	rl.roll = r
	rl.s.notify.Reloading()
	rl.s.log.Info("reload started", zap.Int("generation", r.gen), zap.Int("slots", len(r.todo)))
	rl.s.emit(nil, control.Event{Kind: control.EventReload, Step: control.StepStart, Generation: r.gen})
	rl.rollStep()
}

// recycle replaces one slot's worker through the rollout path.
func (rl *reloader) recycle(p *process, why string) {
	if rl.roll != nil || rl.s.scaler.scaling != nil || rl.s.phase != phaseRunning || rl.s.sys.Now().Before(p.slot.recycleAt) {
		return
	}
	rl.s.log.Info("recycling worker", p.fields(zap.String("why", why))...)
	rl.s.emit(p, control.Event{Kind: control.EventRecycle, Why: why})
	rl.roll = &rollout{reason: control.CauseRecycle, gen: rl.s.gen, todo: []*slot{p.slot}, began: rl.s.sys.Now(), recycled: p.slot}
	rl.rollStep()
}

// rollStep starts the new worker for the next slot, or ends the rollout.
func (rl *reloader) rollStep() {
	r := rl.roll
	for len(r.todo) > 0 {
		sl := r.todo[0]
		r.todo = r.todo[1:]
		if sl.removed || sl.cur == nil {
			continue // scaled away, or respawning (into the new generation)
		}
		if r.reason == control.CauseRollback && sl.cur.gen == r.gen {
			continue // a canary that crashed came back in the kept release
		}
		p, err := rl.s.spawn(sl, r.gen, r.reason)
		if err != nil {
			rl.rollFailed(fmt.Errorf("slot %d: %w", sl.id, err))
			return
		}
		r.next = p
		rl.s.emit(p, control.Event{Kind: r.event(), Step: control.StepFork})
		return
	}
	if c := r.canary; c != nil {
		switch c.state {
		case control.CanaryStarting:
			rl.bake(c)
			return
		case control.CanaryRollingBack:
			rl.rolledBack(r)
			return
		}
	}
	rl.roll = nil
	if sl := r.recycled; sl != nil {
		sl.recycleFails = 0
	}
	took := rl.s.sys.Now().Sub(r.began)
	msg := r.note + fmt.Sprintf("%s: replaced %d workers in %s", r.reason, r.done, took.Round(time.Millisecond))
	if c := r.canary; c != nil {
		rl.last = c
		msg = r.note + fmt.Sprintf("reload: canary %s (%s); replaced %d workers in %s", c.verdict.verdict, c.verdict.why, r.done, took.Round(time.Millisecond))
	}
	rl.s.log.Info(string(r.reason)+" done", zap.Int("generation", r.gen), zap.Int("replaced", r.done), zap.Duration("took", took))
	rl.s.emit(nil, control.Event{Kind: r.event(), Step: control.StepDone, Generation: r.gen, Replaced: r.done})
	if r.reason == control.CauseReload {
		rl.s.counts.reloads["success"]++
		rl.s.notify.Ready(rl.s.statusLine())
		rl.s.releases.prune()
	}
	var st *control.CanaryStatus
	if r.canary != nil {
		st = rl.canaryStatus()
	}
	for _, w := range r.waiters {
		respond(w, control.Response{OK: true, Message: msg, Canary: st})
	}
	rl.s.idle()
}

// rollReady runs when the rollout's new worker is ready: it takes the slot
// and the worker it replaces drains.
func (rl *reloader) rollReady(p *process) {
	r := rl.roll
	prev := p.slot.cur
	p.slot.cur = p
	route(rl.s.mode, p)
	if prev != nil && rl.s.live[prev.pid] == prev {
		rl.s.drain(prev, r.reason)
	}
	r.done++
	r.next = nil
	rl.rollStep()
}

// rollFailed ends the rollout after its new worker failed; the old worker of
// that slot, and every slot not reached, keep serving.
func (rl *reloader) rollFailed(err error) {
	r := rl.roll
	if c := r.canary; c != nil && rl.s.phase != phaseStopping && (c.state == control.CanaryStarting || c.state == control.CanaryBaking) {
		// The canary's own slots go back to the kept release.
		rl.decide(c, verdict{verdict: control.VerdictFail, rollback: true, why: "a canary worker failed: " + err.Error()})
		return
	}
	rl.roll = nil
	if c := r.canary; c != nil {
		rl.last = c
	}
	err = fmt.Errorf("%s failed after %d of %d slots: %w", r.reason, r.done, r.done+1+len(r.todo), err)
	if sl := r.recycled; sl != nil {
		// The new worker could not boot: try again after a backoff, not at
		// the old one's next heartbeat.
		sl.recycleFails++
		sl.recycleAt = rl.s.sys.Now().Add(recycleBackoff(sl.recycleFails))
	}
	rl.s.log.Error(string(r.reason)+" failed; old workers keep serving", zap.Error(err))
	rl.s.emit(nil, control.Event{Kind: r.event(), Step: control.StepFailed, Error: err.Error()})
	if r.reason == control.CauseReload {
		rl.s.counts.reloads["failure"]++
		rl.s.notify.Ready(rl.s.statusLine())
	}
	for _, w := range r.waiters {
		respond(w, control.Response{Error: r.note + err.Error()})
	}
	rl.s.idle()
}

// idle runs when a rollout or a scale ends: it starts what was queued
// behind it, a reload first.
func (s *Supervisor) idle() {
	if s.phase != phaseRunning || s.reloader.roll != nil || s.scaler.scaling != nil {
		return
	}
	if len(s.reloader.reloadAfter) > 0 {
		s.reloader.reload(nil, s.reloader.afterOpts) // takes the queued requests as its waiters
		if s.reloader.roll != nil {
			return
		}
	}
	if n := s.scaler.scaleQueued; n != 0 {
		s.scaler.scaleQueued = 0
		s.scaler.scaleBy(n)
	}
	if s.scaler.scaling == nil {
		s.forks.runForks()
	}
}

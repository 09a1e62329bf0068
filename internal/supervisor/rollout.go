package supervisor

import (
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
	gen     int
	todo    []*slot
	next    *process // the new worker starting now
	done    int
	began   time.Time
	waiters []chan control.Response
	// recycled is the slot a recycle replaces the worker of; nil for a
	// reload.
	recycled *slot
}

// recycleBackoff is how long a slot waits after its nth failed recycle in a
// row before the next: 2s doubling up to 5 minutes.
func recycleBackoff(n int) time.Duration {
	return min(time.Second<<min(n, 10), 5*time.Minute)
}

// event is the kind of event a rollout's steps are reported as.
func (r *rollout) event() control.EventKind {
	if r.reason == control.CauseRecycle {
		return control.EventRecycle
	}
	return control.EventReload
}

// reload starts a rolling reload of every slot into a new generation; reply
// (may be nil) gets the result when it is over. A reload asked for while
// the workers are still starting starts once they are ready, and one asked
// for during another rollout starts after it, so that it picks up a binary
// replaced meanwhile.
func (s *Supervisor) reload(reply chan control.Response) {
	switch {
	case s.phase == phaseStopping:
		respond(reply, control.Response{Error: "reload: supervisor is stopping"})
		return
	case s.phase == phaseStarting && reply != nil:
		respond(reply, control.Response{Error: "reload: workers are still starting"})
		return
	case s.phase == phaseStarting:
		s.reloadQueued = true
		s.log.Info("reload deferred until the workers are ready")
		s.emit(nil, control.Event{Kind: control.EventDeferred, Request: string(control.CmdReload), Until: "running"})
		return
	case s.roll != nil || s.scaling != nil:
		s.reloadAfter = append(s.reloadAfter, reply)
		s.log.Info("reload queued behind the operation in progress")
		s.emit(nil, control.Event{Kind: control.EventDeferred, Request: string(control.CmdReload), Until: "idle"})
		return
	}
	s.gen++
	// It answers the requests queued behind the operation that just ended
	// too, however it ends, even before rollStep returns.
	r := &rollout{reason: control.CauseReload, gen: s.gen, todo: append([]*slot(nil), s.slots...), began: s.sys.Now(), waiters: s.reloadAfter}
	s.reloadAfter = nil
	if reply != nil {
		r.waiters = append(r.waiters, reply)
	}
	s.roll = r
	s.notify.Reloading()
	s.log.Info("reload started", zap.Int("generation", r.gen), zap.Int("slots", len(r.todo)))
	s.emit(nil, control.Event{Kind: control.EventReload, Step: control.StepStart, Generation: r.gen})
	s.rollStep()
}

// recycle replaces one slot's worker through the rollout path.
func (s *Supervisor) recycle(p *process, why string) {
	if s.roll != nil || s.scaling != nil || s.phase != phaseRunning || s.sys.Now().Before(p.slot.recycleAt) {
		return
	}
	s.log.Info("recycling worker", p.fields(zap.String("why", why))...)
	s.emit(p, control.Event{Kind: control.EventRecycle, Why: why})
	s.roll = &rollout{reason: control.CauseRecycle, gen: s.gen, todo: []*slot{p.slot}, began: s.sys.Now(), recycled: p.slot}
	s.rollStep()
}

// rollStep starts the new worker for the next slot, or ends the rollout.
func (s *Supervisor) rollStep() {
	r := s.roll
	for len(r.todo) > 0 {
		sl := r.todo[0]
		r.todo = r.todo[1:]
		if sl.removed || sl.cur == nil {
			continue // scaled away, or respawning (into the new generation)
		}
		p, err := s.spawn(sl, r.gen, r.reason)
		if err != nil {
			s.rollFailed(fmt.Errorf("slot %d: %w", sl.id, err))
			return
		}
		r.next = p
		s.emit(p, control.Event{Kind: r.event(), Step: control.StepFork})
		return
	}
	s.roll = nil
	if sl := r.recycled; sl != nil {
		sl.recycleFails = 0
	}
	took := s.sys.Now().Sub(r.began)
	msg := fmt.Sprintf("%s: replaced %d workers in %s", r.reason, r.done, took.Round(time.Millisecond))
	s.log.Info(string(r.reason)+" done", zap.Int("generation", r.gen), zap.Int("replaced", r.done), zap.Duration("took", took))
	s.emit(nil, control.Event{Kind: r.event(), Step: control.StepDone, Generation: r.gen, Replaced: r.done})
	if r.reason == control.CauseReload {
		s.counts.reloads["success"]++
		s.notify.Ready(s.statusLine())
	}
	for _, w := range r.waiters {
		respond(w, control.Response{OK: true, Message: msg})
	}
	s.idle()
}

// rollReady runs when the rollout's new worker is ready: it takes the slot
// and the worker it replaces drains.
func (s *Supervisor) rollReady(p *process) {
	r := s.roll
	prev := p.slot.cur
	p.slot.cur = p
	route(s.mode, p)
	if prev != nil && s.live[prev.pid] == prev {
		s.drain(prev, r.reason)
	}
	r.done++
	r.next = nil
	s.rollStep()
}

// rollFailed ends the rollout after its new worker failed; the old worker of
// that slot, and every slot not reached, keep serving.
func (s *Supervisor) rollFailed(err error) {
	r := s.roll
	s.roll = nil
	err = fmt.Errorf("%s failed after %d of %d slots: %w", r.reason, r.done, r.done+1+len(r.todo), err)
	if sl := r.recycled; sl != nil {
		// The new worker could not boot: try again after a backoff, not at
		// the old one's next heartbeat.
		sl.recycleFails++
		sl.recycleAt = s.sys.Now().Add(recycleBackoff(sl.recycleFails))
	}
	s.log.Error(string(r.reason)+" failed; old workers keep serving", zap.Error(err))
	s.emit(nil, control.Event{Kind: r.event(), Step: control.StepFailed, Error: err.Error()})
	if r.reason == control.CauseReload {
		s.counts.reloads["failure"]++
		s.notify.Ready(s.statusLine())
	}
	for _, w := range r.waiters {
		respond(w, control.Response{Error: err.Error()})
	}
	s.idle()
}

// idle runs when a rollout or a scale ends: it starts what was queued
// behind it, a reload first.
func (s *Supervisor) idle() {
	if s.phase != phaseRunning || s.roll != nil || s.scaling != nil {
		return
	}
	if len(s.reloadAfter) > 0 {
		s.reload(nil) // takes the queued requests as its waiters
		if s.roll != nil {
			return
		}
	}
	if n := s.scaleQueued; n != 0 {
		s.scaleQueued = 0
		s.scaleBy(n)
	}
	if s.scaling == nil {
		s.forks.runForks()
	}
}

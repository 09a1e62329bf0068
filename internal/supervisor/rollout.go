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
	reason  string // "reload" or "recycle"
	gen     int
	todo    []*slot
	next    *process // the new worker starting now
	done    int
	began   time.Time
	waiters []chan control.Response
}

// reload starts a rolling reload of every slot into a new generation; reply
// (may be nil) gets the result when it is over. A reload asked for while
// another rollout runs starts after it, so that it picks up a binary
// replaced meanwhile.
func (s *Supervisor) reload(reply chan control.Response) {
	switch {
	case s.phase == phaseStarting:
		respond(reply, control.Response{Error: "reload: workers are still starting"})
		return
	case s.phase == phaseStopping:
		respond(reply, control.Response{Error: "reload: supervisor is stopping"})
		return
	case s.roll != nil:
		s.reloadAfter = append(s.reloadAfter, reply)
		s.log.Info("reload queued behind the rollout in progress", zap.String("current", s.roll.reason))
		return
	}
	s.gen++
	r := &rollout{reason: "reload", gen: s.gen, todo: append([]*slot(nil), s.slots...), began: time.Now()}
	if reply != nil {
		r.waiters = append(r.waiters, reply)
	}
	s.roll = r
	s.notify.Reloading()
	s.log.Info("reload started", zap.Int("generation", r.gen), zap.Int("slots", len(r.todo)))
	s.emit("reload", nil, "step", "start", "generation", r.gen)
	s.rollStep()
}

// recycle replaces one slot's worker through the rollout path.
func (s *Supervisor) recycle(p *process, why string) {
	if s.roll != nil || s.phase != phaseRunning {
		return
	}
	s.log.Info("recycling worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.String("why", why))
	s.emit("recycle", p, "why", why)
	s.roll = &rollout{reason: "recycle", gen: s.gen, todo: []*slot{p.slot}, began: time.Now()}
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
		p, err := s.spawn(sl, r.gen)
		if err != nil {
			s.rollFailed(fmt.Errorf("slot %d: %w", sl.id, err))
			return
		}
		s.track(p, r.reason)
		r.next = p
		s.emit(r.reason, p, "step", "fork", "slot", sl.id)
		return
	}
	s.roll = nil
	msg := fmt.Sprintf("%s: replaced %d workers in %s", r.reason, r.done, time.Since(r.began).Round(time.Millisecond))
	s.log.Info(r.reason+" done", zap.Int("generation", r.gen), zap.Int("replaced", r.done), zap.Duration("took", time.Since(r.began)))
	s.emit(r.reason, nil, "step", "done", "generation", r.gen, "replaced", r.done)
	if r.reason == "reload" {
		s.reloads["success"]++
		s.notify.Ready(s.statusLine())
	}
	for _, w := range r.waiters {
		respond(w, control.Response{OK: true, Message: msg})
	}
	s.afterRollout()
}

// rollReady runs when the rollout's new worker is ready: it takes the slot
// and the worker it replaces drains.
func (s *Supervisor) rollReady(p *process) {
	r := s.roll
	sl := p.slot
	prev := sl.cur
	sl.cur = p
	s.route(p)
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
	s.log.Error(r.reason+" failed; old workers keep serving", zap.Error(err))
	s.emit(r.reason, nil, "step", "failed", "error", err.Error())
	if r.reason == "reload" {
		s.reloads["failure"]++
		s.notify.Ready(s.statusLine())
	}
	for _, w := range r.waiters {
		respond(w, control.Response{Error: err.Error()})
	}
	s.afterRollout()
}

// afterRollout starts a reload that was asked for during the last rollout.
func (s *Supervisor) afterRollout() {
	if len(s.reloadAfter) == 0 || s.phase != phaseRunning {
		for _, w := range s.reloadAfter {
			respond(w, control.Response{Error: "reload: supervisor is stopping"})
		}
		s.reloadAfter = nil
		return
	}
	waiters := s.reloadAfter
	s.reloadAfter = nil
	s.reload(nil)
	if s.roll != nil {
		s.roll.waiters = append(s.roll.waiters, waiters...)
	} else {
		for _, w := range waiters {
			respond(w, control.Response{Error: "reload: could not start"})
		}
	}
}

// respond sends a control reply without ever blocking the owner goroutine:
// reply channels are buffered.
func respond(reply chan control.Response, r control.Response) {
	if reply == nil {
		return
	}
	select {
	case reply <- r:
	default:
	}
}

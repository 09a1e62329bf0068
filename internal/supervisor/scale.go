package supervisor

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// scaling is a scale operation waiting for its new workers to be ready or
// its removed ones to exit.
type scaling struct {
	adding  map[*slot]bool
	leaving map[*process]bool
	began   time.Time
	waiters []chan control.Response
}

// scale sets the number of slots to n. New slots get workers at once;
// removed slots (the highest ids) drain theirs. reply gets the result when
// the new workers are ready and the removed ones have exited.
func (s *Supervisor) scale(n int, reply chan control.Response) {
	switch {
	case n < 1 || n > MaxWorkers:
		respond(reply, control.Response{Error: fmt.Sprintf("scale: %d is out of range 1..%d", n, MaxWorkers)})
		return
	case s.phase != phaseRunning:
		respond(reply, control.Response{Error: "scale: supervisor is " + [...]string{"starting", "running", "stopping"}[s.phase]})
		return
	case s.roll != nil || s.scaling != nil:
		respond(reply, control.Response{Error: "scale: another reload or scale is in progress; try again when it is done"})
		return
	}
	op := &scaling{adding: map[*slot]bool{}, leaving: map[*process]bool{}, began: time.Now()}
	if reply != nil {
		op.waiters = append(op.waiters, reply)
	}
	from := len(s.slots)
	s.log.Info("scaling", zap.Int("from", from), zap.Int("to", n))
	s.emit("scale", nil, "from", from, "to", n)
	for len(s.slots) < n {
		sl, err := s.newSlot(len(s.slots) + 1)
		if err != nil {
			respond(reply, control.Response{Error: fmt.Sprintf("scale: slot %d: %v", len(s.slots)+1, err)})
			return
		}
		s.slots = append(s.slots, sl)
		if err := s.start(sl, "scale"); err != nil {
			s.slots = s.slots[:len(s.slots)-1]
			sl.removed = true
			s.retire(sl)
			respond(reply, control.Response{Error: fmt.Sprintf("scale: slot %d: %v", sl.id, err)})
			return
		}
		op.adding[sl] = true
	}
	for len(s.slots) > n {
		sl := s.slots[len(s.slots)-1]
		s.slots = s.slots[:len(s.slots)-1]
		sl.removed = true
		for _, p := range s.live {
			if p.slot == sl {
				op.leaving[p] = true
				s.drain(p, "scale")
			}
		}
		sl.cur = nil
		s.retire(sl)
	}
	s.scaling = op
	s.scaleProgress()
}

// scaleProgress answers the scale operation once it is complete.
func (s *Supervisor) scaleProgress() {
	op := s.scaling
	if op == nil {
		return
	}
	for sl := range op.adding {
		if sl.cur != nil && sl.cur.state == stateReady {
			delete(op.adding, sl)
		}
	}
	for p := range op.leaving {
		if s.live[p.pid] != p {
			delete(op.leaving, p)
		}
	}
	if len(op.adding) > 0 || len(op.leaving) > 0 {
		return
	}
	s.scaling = nil
	msg := fmt.Sprintf("scale: %d workers in %s", len(s.slots), time.Since(op.began).Round(time.Millisecond))
	s.log.Info("scale done", zap.Int("workers", len(s.slots)), zap.Duration("took", time.Since(op.began)))
	s.emit("scale", nil, "step", "done", "to", len(s.slots))
	s.notify.Status(s.statusLine())
	for _, w := range op.waiters {
		respond(w, control.Response{OK: true, Message: msg})
	}
}

// scaleFailed ends a scale-up whose new worker could not start: the slot is
// removed again.
func (s *Supervisor) scaleFailed(sl *slot, err error) {
	op := s.scaling
	s.scaling = nil
	if len(s.slots) > 0 && s.slots[len(s.slots)-1] == sl {
		s.slots = s.slots[:len(s.slots)-1]
		sl.removed = true
		sl.cur = nil
		s.retire(sl)
	}
	e := fmt.Sprintf("scale failed: slot %d: %v", sl.id, err)
	s.log.Error(e)
	s.emit("scale", nil, "step", "failed", "error", e)
	for _, w := range op.waiters {
		respond(w, control.Response{Error: e})
	}
}

// newSlot returns slot id for a scale-up. In reuseport mode a slot removed
// earlier comes back with its socket, whose backlog the supervisor keeps
// serving until the new worker is ready (route stops that); otherwise the
// slot gets a new socket.
func (s *Supervisor) newSlot(id int) (*slot, error) {
	if sl, ok := s.retired[id]; ok {
		delete(s.retired, id)
		sl.removed = false
		return sl, nil
	}
	sl := &slot{id: id}
	if s.cfg.Mode != ipc.ModeReusePort {
		return sl, nil
	}
	ln, err := listener.ListenOne(s.addr)
	if err != nil {
		return nil, err
	}
	if sl.ln, err = listener.Detach(ln); err != nil {
		return nil, err
	}
	return sl, nil
}

// retire keeps a removed reuseport slot, socket open, with the supervisor
// accepting on it and handing its connections to the remaining workers. The
// kernel keeps hashing new connections to every socket of the group, and
// closing one resets whatever is queued on it, so a socket is never closed
// while the supervisor runs: a later scale-up gives it a worker again.
func (s *Supervisor) retire(sl *slot) {
	if sl.ln == nil {
		return
	}
	s.adoptBacklog(sl)
	s.retired[sl.id] = sl
}

package supervisor

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// scaling is a scale operation waiting for its new workers to be ready and
// its removed ones to exit.
type scaling struct {
	from    int // slots before the scale, to return to if it fails
	adding  map[*slot]bool
	leaving map[*process]bool
	began   time.Time
	waiters []chan control.Response
}

// scaleBy is TTIN (+1) and TTOU (-1). While another operation runs, or the
// workers are still starting, the change is queued and applied when it can
// be; TTOU never removes the last worker.
func (s *Supervisor) scaleBy(d int) {
	if s.phase == phaseStopping {
		return
	}
	if s.phase == phaseStarting || s.roll != nil || s.scaling != nil {
		s.scaleQueued += d
		s.log.Info("scale deferred until the operation in progress ends", zap.Int("queued", s.scaleQueued))
		s.emit(nil, control.Event{Kind: control.EventDeferred, Request: string(control.CmdScale), By: d, Queued: s.scaleQueued})
		return
	}
	// Queued signals add up: as many as fit within 1..MaxWorkers apply.
	if n := min(max(len(s.slots)+d, 1), MaxWorkers); n != len(s.slots) {
		s.scale(n, nil)
	}
}

// scale sets the number of slots to n. New slots get workers at once;
// removed slots (the highest ids) drain theirs. reply gets the result when
// the new workers are ready and the removed ones have exited. A scale-up
// one of whose new workers fails is undone as a whole: every slot it added
// is removed again, so that no slot is left without a worker.
func (s *Supervisor) scale(n int, reply chan control.Response) {
	switch {
	case n < 1 || n > MaxWorkers:
		respond(reply, control.Response{Error: fmt.Sprintf("scale: %d is out of range 1..%d", n, MaxWorkers)})
		return
	case s.phase != phaseRunning:
		respond(reply, control.Response{Error: "scale: supervisor is " + s.phase.String()})
		return
	case s.roll != nil || s.scaling != nil:
		respond(reply, control.Response{Error: "scale: another reload or scale is in progress; try again when it is done"})
		return
	case n == len(s.slots):
		respond(reply, control.Response{OK: true, Message: fmt.Sprintf("scale: already %d workers", n)})
		return
	}
	op := &scaling{from: len(s.slots), adding: map[*slot]bool{}, leaving: map[*process]bool{}, began: s.sys.Now()}
	if reply != nil {
		op.waiters = append(op.waiters, reply)
	}
	s.scaling = op
	s.log.Info("scaling", zap.Int("from", op.from), zap.Int("to", n))
	s.emit(nil, control.Event{Kind: control.EventScale, From: op.from, To: n, Step: control.StepStart})
	for len(s.slots) < n {
		sl := &slot{id: len(s.slots) + 1}
		s.slots = append(s.slots, sl)
		op.adding[sl] = true
		if err := s.start(sl, control.CauseScale); err != nil {
			s.scaleFailed(sl, err)
			return
		}
	}
	s.removeSlots(n, op)
	s.scaleProgress()
}

// removeSlots removes the slots above n: their workers drain, and op (if
// any) waits for them to exit.
func (s *Supervisor) removeSlots(n int, op *scaling) {
	for len(s.slots) > n {
		sl := s.slots[len(s.slots)-1]
		s.slots = s.slots[:len(s.slots)-1]
		sl.removed = true
		for _, p := range s.live {
			if p.slot == sl {
				if op != nil {
					op.leaving[p] = true
				}
				s.drain(p, control.CauseScale)
			}
		}
		sl.cur = nil
		s.mode.slot(sl, slotRetired)
	}
}

// scaleProgress ends the scale operation once it is complete.
func (s *Supervisor) scaleProgress() {
	op := s.scaling
	if op == nil {
		return
	}
	for sl := range op.adding {
		if sl.cur != nil && sl.cur.state == control.StateReady {
			delete(op.adding, sl)
		}
	}
	for p := range op.leaving {
		if s.live[p.pid] != p {
			delete(op.leaving, p)
		}
	}
	if len(op.adding) == 0 && len(op.leaving) == 0 {
		s.scaleEnded(nil)
	}
}

// scaleFailed undoes a scale-up one of whose new workers (in sl) could not
// start: the slots it added are removed again, whatever their workers'
// state, and the supervisor stays at the size it had.
func (s *Supervisor) scaleFailed(sl *slot, err error) {
	op := s.scaling
	s.removeSlots(op.from, nil)
	s.scaleEnded(fmt.Errorf("slot %d: %w; staying at %d workers", sl.id, err, op.from))
}

// scaleEnded answers the scale operation's waiters, with err if it failed,
// and starts what was queued behind it.
func (s *Supervisor) scaleEnded(err error) {
	op := s.scaling
	s.scaling = nil
	took := s.sys.Now().Sub(op.began)
	if err != nil {
		err = fmt.Errorf("scale failed: %w", err)
		if errors.Is(err, errStopping) {
			err = errors.New("scale: supervisor is stopping")
		}
		s.log.Error("scale failed", zap.Error(err))
		s.emit(nil, control.Event{Kind: control.EventScale, Step: control.StepFailed, Error: err.Error()})
		for _, w := range op.waiters {
			respond(w, control.Response{Error: err.Error()})
		}
	} else {
		msg := fmt.Sprintf("scale: %d workers in %s", len(s.slots), took.Round(time.Millisecond))
		s.log.Info("scale done", zap.Int("workers", len(s.slots)), zap.Duration("took", took))
		s.emit(nil, control.Event{Kind: control.EventScale, Step: control.StepDone, To: len(s.slots)})
		s.notify.Status(s.statusLine())
		for _, w := range op.waiters {
			respond(w, control.Response{OK: true, Message: msg})
		}
	}
	s.idle()
}

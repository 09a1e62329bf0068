package supervisor

import (
	"errors"
	"fmt"
	"slices"
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

// scaler changes the number of slots: the scale that runs, and a
// TTIN/TTOU that arrived while it could not. It is the field scaler of a
// Supervisor, owned by its owner goroutine.
type scaler struct {
	s *Supervisor

	scaling *scaling // nil: none runs
	// TTIN/TTOU that arrived during start-up, a rollout or another scale,
	// carried out as soon as it can.
	scaleQueued int
}

// scaleBy is TTIN (+1) and TTOU (-1). While another operation runs, or the
// workers are still starting, the change is queued and applied when it can
// be; TTOU never removes the last worker.
func (sc *scaler) scaleBy(d int) {
	if sc.s.phase == phaseStopping {
		return
	}
	if sc.s.phase == phaseStarting || sc.s.reloader.roll != nil || sc.scaling != nil {
		sc.scaleQueued += d
		sc.s.log.Info("scale deferred until the operation in progress ends", zap.Int("queued", sc.scaleQueued))
		sc.s.emit(nil, control.Event{Kind: control.EventDeferred, Request: string(control.CmdScale), By: d, Queued: sc.scaleQueued})
		return
	}
	// Queued signals add up: as many as fit within 1..MaxWorkers apply.
	if n := min(max(len(sc.s.slots)+d, 1), MaxWorkers); n != len(sc.s.slots) {
		sc.scale(n, nil)
	}
}

// scale sets the number of slots to n. New slots get workers at once;
// removed slots (the highest ids) drain theirs. reply gets the result when
// the new workers are ready and the removed ones have exited. A scale-up
// one of whose new workers fails is undone as a whole: every slot it added
// is removed again, so that no slot is left without a worker.
func (sc *scaler) scale(n int, reply chan control.Response) {
	switch {
	case n < 1 || n > MaxWorkers:
		respond(reply, control.Response{Error: fmt.Sprintf("scale: %d is out of range 1..%d", n, MaxWorkers)})
		return
	case sc.s.phase != phaseRunning:
		respond(reply, control.Response{Error: "scale: supervisor is " + sc.s.phase.String()})
		return
	case sc.s.reloader.roll != nil || sc.scaling != nil:
		respond(reply, control.Response{Error: "scale: another reload or scale is in progress; try again when it is done"})
		return
	case n == len(sc.s.slots):
		respond(reply, control.Response{OK: true, Message: fmt.Sprintf("scale: already %d workers", n)})
		return
	}
	op := &scaling{from: len(sc.s.slots), adding: map[*slot]bool{}, leaving: map[*process]bool{}, began: sc.s.sys.Now()}
	if reply != nil {
		op.waiters = append(op.waiters, reply)
	}
	sc.scaling = op
	sc.s.log.Info("scaling", zap.Int("from", op.from), zap.Int("to", n))
	sc.s.emit(nil, control.Event{Kind: control.EventScale, From: op.from, To: n, Step: control.StepStart})
	for len(sc.s.slots) < n {
		sl := &slot{id: len(sc.s.slots) + 1}
		sc.s.slots = append(sc.s.slots, sl)
		op.adding[sl] = true
		if err := sc.s.start(sl, control.CauseScale); err != nil {
			sc.scaleFailed(sl, err)
			return
		}
	}
	sc.removeSlots(n, op)
	sc.scaleProgress()
}

// removeSlots removes the slots above n: their workers drain, and op (if
// any) waits for them to exit. Every leaving worker leaves the rotation
// before the mode retires any slot: reuseport hands a retired slot's
// backlog on at once, and it must reach only the workers that stay, not one
// told to drain a moment later, which would take it while it drains.
func (sc *scaler) removeSlots(n int, op *scaling) {
	gone := slices.Clone(sc.s.slots[min(n, len(sc.s.slots)):])
	sc.s.slots = sc.s.slots[:len(sc.s.slots)-len(gone)]
	slices.Reverse(gone) // the highest slot first
	for _, sl := range gone {
		sl.removed = true
		for _, p := range sc.s.live {
			if p.slot == sl {
				if op != nil {
					op.leaving[p] = true
				}
				sc.s.drain(p, control.CauseScale)
			}
		}
		sl.cur = nil
	}
	for _, sl := range gone {
		sc.s.mode.slot(sl, slotRetired)
	}
}

// scaleProgress ends the scale operation once it is complete.
func (sc *scaler) scaleProgress() {
	op := sc.scaling
	if op == nil {
		return
	}
	for sl := range op.adding {
		if sl.cur != nil && sl.cur.state == control.StateReady {
			delete(op.adding, sl)
		}
	}
	for p := range op.leaving {
		if sc.s.live[p.pid] != p {
			delete(op.leaving, p)
		}
	}
	if len(op.adding) == 0 && len(op.leaving) == 0 {
		sc.scaleEnded(nil)
	}
}

// scaleFailed undoes a scale-up one of whose new workers (in sl) could not
// start: the slots it added are removed again, whatever their workers'
// state, and the supervisor stays at the size it had.
func (sc *scaler) scaleFailed(sl *slot, err error) {
	op := sc.scaling
	sc.removeSlots(op.from, nil)
	sc.scaleEnded(fmt.Errorf("slot %d: %w; staying at %d workers", sl.id, err, op.from))
}

// scaleEnded answers the scale operation's waiters, with err if it failed,
// and starts what was queued behind it.
func (sc *scaler) scaleEnded(err error) {
	op := sc.scaling
	sc.scaling = nil
	took := sc.s.sys.Now().Sub(op.began)
	if err != nil {
		err = fmt.Errorf("scale failed: %w", err)
		if errors.Is(err, errStopping) {
			err = errors.New("scale: supervisor is stopping")
		}
		sc.s.log.Error("scale failed", zap.Error(err))
		sc.s.emit(nil, control.Event{Kind: control.EventScale, Step: control.StepFailed, Error: err.Error()})
		for _, w := range op.waiters {
			respond(w, control.Response{Error: err.Error()})
		}
	} else {
		msg := fmt.Sprintf("scale: %d workers in %s", len(sc.s.slots), took.Round(time.Millisecond))
		sc.s.log.Info("scale done", zap.Int("workers", len(sc.s.slots)), zap.Duration("took", took))
		sc.s.emit(nil, control.Event{Kind: control.EventScale, Step: control.StepDone, To: len(sc.s.slots)})
		sc.s.notify.Status(sc.s.statusLine())
		for _, w := range op.waiters {
			respond(w, control.Response{OK: true, Message: msg})
		}
	}
	sc.s.idle()
}

package supervisor

import (
	"errors"
	"syscall"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// errStopping ends what was in progress when the supervisor began to stop.
var errStopping = errors.New("supervisor is stopping")

// stop is a stop request (a signal, or ctl stop). The first begins a
// graceful stop; a second, while workers are still draining, kills them.
func (s *Supervisor) stop(by string) {
	if s.phase != phaseStopping {
		s.beginStop(nil)
		return
	}
	s.log.Warn("second stop request: killing workers now", zap.String("by", by))
	if s.stopErr == nil {
		s.stopErr = errors.New("stopped by a second signal; workers killed")
	}
	for _, p := range s.live {
		p.proc.Signal(syscall.SIGKILL)
	}
}

// beginStop stops accepting and drains every worker. err is what the
// supervisor stops with (nil for a clean stop). Each worker has -grace to
// finish before its kill timer fires; the loop ends once every worker has
// been waited for.
func (s *Supervisor) beginStop(err error) {
	if s.phase == phaseStopping {
		return
	}
	if err != nil {
		s.log.Error("stopping", zap.Error(err))
	}
	close(s.stopping)
	s.emit(nil, control.Event{Kind: control.EventStop})
	s.phase, s.stopErr = phaseStopping, err
	if s.reloader.roll != nil {
		s.reloader.rollFailed(errStopping) // tells systemd READY=1: the reload is over
	}
	if s.scaler.scaling != nil {
		s.scaler.scaleEnded(errStopping)
	}
	s.notify.Stopping()
	for _, w := range s.reloader.reloadAfter {
		respond(w, control.Response{Error: "reload: supervisor is stopping"})
	}
	s.reloader.reloadAfter, s.reloader.reloadQueued, s.scaler.scaleQueued = nil, false, 0
	s.forks.endForks()
	s.up.stopRehearsal()
	s.mode.stopAccepting() // queued connections go to whoever is still ready
	s.proto.stop()
	for _, p := range s.live {
		s.drain(p, control.CauseStop)
	}
}

// stopped reports whether the supervisor has stopped and waited for every
// worker, and for an upgrade's rehearsal (killed when the stop began).
func (s *Supervisor) stopped() bool {
	return s.phase == phaseStopping && len(s.live) == 0 && s.up.rehearsal == nil
}

// finish runs once every worker has exited.
func (s *Supervisor) finish() {
	if n := s.mode.handoff().CloseQueue(); n > 0 {
		s.log.Warn("closed connections still queued at stop", zap.Int("connections", n))
	}
	s.log.Info("stopped", zap.Duration("uptime", s.sys.Now().Sub(s.begun)))
}

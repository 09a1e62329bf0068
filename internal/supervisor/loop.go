package supervisor

import (
	"context"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
)

// tickEvery is how often the owner goroutine checks heartbeats, pings the
// systemd watchdog and looks for its own stalls.
const tickEvery = 250 * time.Millisecond

// Events. Each is handled by the owner goroutine in handle; a handler that
// changes state in a way another handler reacts to queues a new event
// (enqueue; never post, which could block on the owner's own full channel)
// rather than calling that handler.
type (
	// From a process's goroutines.
	evExit struct {
		p  *process
		st exitStatus
	}
	evReady struct {
		p    *process
		uses ipc.Features // what the worker's ready frame announced
	}
	evBeat struct {
		p  *process
		hb ipc.Heartbeat
	}
	evMessage struct {
		p   *process
		msg []byte
	}
	evLeaving  struct{ p *process } // a worker disconnected itself
	evProtocol struct {
		p     *process
		err   error
		count int // protocol errors from p so far
	}

	// From timers.
	evRespawn struct {
		sl    *slot
		cause control.Cause
	}
	evReadyDue struct{ p *process }
	evKillDue  struct{ p *process }
	evDrainDue struct{ p *process } // send the drain frame again

	// From the control socket and the metrics listener.
	evControl struct {
		req   control.Request
		reply chan control.Response
	}
	evSnapshot struct{ reply chan snapshot }

	// From the Engine: fn runs on the owner goroutine.
	evCall struct{ fn func(*Supervisor) }
)

// loop is the owner goroutine: it handles signals, events and ticks until
// the supervisor has stopped and every worker has been waited for.
func (s *Supervisor) loop(sigs <-chan os.Signal) error {
	s.sigs = sigs
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for !s.stopped() {
		if ev, ok := s.dequeue(); ok {
			s.handle(ev)
			continue
		}
		// A question first: behind a thousand worker messages in
		// events, `ctl status` took hundreds of milliseconds.
		select {
		case ev := <-s.asks:
			s.handle(ev)
			continue
		default:
		}
		select {
		case sig := <-sigs:
			s.onSignal(sig)
		case ev := <-s.asks:
			s.handle(ev)
		case ev := <-s.events:
			s.handle(ev)
		case <-tick.C:
			s.health.onTick()
		}
	}
	s.finish()
	return s.stopErr
}

// post delivers an event to the owner goroutine; after the loop has ended it is
// dropped.
func (s *Supervisor) post(ev any) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

// enqueue queues ev for the owner goroutine, from the owner goroutine: a
// state change that another handler reacts to is an event, handled after
// the current one, never a call back into the dispatcher. Unlike post it
// cannot block on the owner's own full channel.
func (s *Supervisor) enqueue(ev any) { s.queue = append(s.queue, ev) }

func (s *Supervisor) dequeue() (any, bool) {
	if len(s.queue) == 0 {
		return nil, false
	}
	ev := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return ev, true
}

// after posts ev once d has passed on the supervisor's clock.
func (s *Supervisor) after(d time.Duration, ev any) {
	s.sys.AfterFunc(d, func() { s.post(ev) })
}

// handle dispatches one event.
func (s *Supervisor) handle(ev any) {
	switch ev := ev.(type) {
	case evExit:
		s.onExit(ev.p, ev.st)
	case evReady:
		s.onReady(ev.p, ev.uses)
	case evBeat:
		s.health.onBeat(ev.p, ev.hb)
	case evMessage:
		s.messages.onMessage(ev.p, ev.msg)
	case evProtocol:
		s.onProtocol(ev.p, ev.err, ev.count)
	case evLeaving:
		s.onLeaving(ev.p)
	case evRespawn:
		s.respawn(ev.sl, ev.cause)
	case evReadyDue:
		s.readyDue(ev.p)
	case evKillDue:
		s.killDue(ev.p)
	case evDrainDue:
		ev.p.link.drain(s, ev.p) // only a prefork link retries
	case evControl:
		s.onControl(ev.req, ev.reply)
	case evSnapshot:
		ev.reply <- s.snapshot()
	case evCall:
		ev.fn(s)
	case evUpgrade:
		s.up.onUpgrade(ev)
	case evRehearsed:
		s.up.onRehearsed(ev)
	case evVerdictDue:
		s.reloader.verdictDue(ev.c)
	}
}

func (s *Supervisor) onSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		s.log.Info("stopping", zap.Stringer("signal", sig), zap.Duration("grace", s.cfg.Grace))
		s.stop(sig.String())
	case syscall.SIGHUP:
		s.log.Info("reload requested", zap.Stringer("signal", sig))
		s.svc.reloadAdmin()
		s.reloader.requestReload(nil, control.Request{}) // -canary and -bake
	case syscall.SIGTTIN:
		s.scaler.scaleBy(+1)
	case syscall.SIGTTOU:
		s.scaler.scaleBy(-1)
	case syscall.SIGUSR2:
		s.log.Info("upgrade requested", zap.Stringer("signal", sig), zap.String("path", s.up.exe))
		// Begun here, on the owner: an upgrade in progress can execve
		// before a goroutine started now runs, and this request would
		// end with the old image, neither made nor coalesced.
		if _, ok := s.up.begin(); ok {
			go s.up.upgradeBegun(context.Background(), "", false) // the check runs off the owner goroutine
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

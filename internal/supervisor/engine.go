package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/nodeipc"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/settings"
)

// Engine is a running supervisor: the supervisor command's, and the public
// cluster/primary package's Primary. Its methods reach the owner loop as
// events, as the control socket does, so none of them touches the supervisor's
// state from outside.
type Engine struct {
	s    *Supervisor
	bus  *control.Broadcaster
	sub  *control.Subscription // subscribed before the first worker starts
	done chan struct{}         // closed once the loop has returned
	err  error                 // what it returned; read after done
	sp   *spawner              // served by Wait in the image an upgrade started; else nil
	addr string                // the listening address, read once before the loop runs
}

// ErrUsage is what a bad setting is, for errors.Is: exit status 2 on the
// command line.
var ErrUsage = settings.ErrUsage

// validate checks cfg before it runs: the error names the field of
// Settings, as a Go caller set it (the command line checked its flags
// already).
func validate(cfg Config) error {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return usagef("no worker command")
	}
	return cfg.Validate()
}

// Start binds, starts the workers and supervises them until a stop signal
// or a fatal error, on a goroutine of its own. It returns once it listens
// and is about to start the first workers, or with the error that stopped
// it before; Wait returns what stops it later.
//
// In the image an in-place upgrade started (ctl upgrade), the workers'
// parent is the main thread, so the goroutine that calls Start and Wait —
// main's — serves the spawner: Start until the supervisor runs, and Wait
// until it stops. That goroutine must then call no other Engine method
// before Wait: each waits for the owner goroutine, which may be waiting
// for it to start a worker (one that died during the upgrade, say).
func Start(cfg Config, log *zap.Logger) (*Engine, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	st, stErr := takeState()
	if stErr != errNoState && rehearsing() {
		os.Exit(rehearse(cfg, log, st, stErr)) // see upgrade_rehearsal.go
	}
	var sp *spawner
	if stErr != errNoState {
		sp = &spawner{reqs: make(chan spawnReq), err: make(chan error, 1)}
	}
	started := make(chan *Engine, 1)
	failed := make(chan error, 1)
	go func() {
		var e *Engine
		hook := func(x *Engine) {
			e = x
			e.sub = e.bus.SubscribeFull() // the application gets its messages whole
			x.s.messages.window = newWindow(MessageWindow)
			e.done = make(chan struct{})
			e.sp = sp
			e.addr = addrOf(x.s.mode)
			started <- e
		}
		var err error
		if sp != nil {
			err = restore(cfg, log, st, stErr, sp, hook)
		} else {
			err = run(cfg, log, nil, nil, hook)
		}
		if e == nil {
			failed <- err
			return
		}
		e.err = err
		close(e.done)
	}()
	var e *Engine
	var err error
	if sp != nil {
		up := make(chan struct{})
		go func() {
			select {
			case e = <-started:
			case err = <-failed:
			}
			close(up)
		}()
		sp.serveUntil(up) // a rollback execs from here
		<-up
	} else {
		select {
		case e = <-started:
		case err = <-failed:
		}
	}
	if e == nil {
		return nil, err
	}
	return e, nil
}

// Addr is the address the supervisor listens on, with the port it got
// for port 0. Unlike Do it never waits for the owner goroutine.
func (e *Engine) Addr() string { return e.addr }

// Events is the engine's event stream: every event `supervisor ctl events`
// shows, from before the first worker's fork. Past control.SubscriberBuffer
// events behind, the oldest are lost and an EventDropped says how many:
// a slow reader never holds up the supervisor. Close it to stop.
func (e *Engine) Events() *control.Subscription { return e.sub }

// Done is closed once the supervisor has stopped and waited for every
// worker.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Wait waits for the supervisor to stop and returns why: nil after a clean
// stop.
//
// After an in-place upgrade, Wait must be called, from the goroutine that
// called Start, for workers to be started: see Start.
func (e *Engine) Wait() error {
	if e.sp != nil {
		e.sp.serveUntil(e.done)
	}
	<-e.done
	return e.err
}

// Do carries out a control request (status, reload, scale, stop) as the
// control socket does, and waits for its answer or ctx.
func (e *Engine) Do(ctx context.Context, req control.Request) control.Response {
	return handler{e.s}.Do(ctx, req)
}

// ErrStopped is what a request to a supervisor that has stopped gets.
var ErrStopped = errStopped

// call runs fn on the owner goroutine and returns its result.
func call[T any](ctx context.Context, e *Engine, fn func(*Supervisor) T) (T, error) {
	return ask(ctx, e.s, func(reply chan T) any {
		return evCall{fn: func(s *Supervisor) { reply <- fn(s) }} // reply has room for one
	})
}

// ErrNoWorker is the error for a worker process that has exited.
var ErrNoWorker = errors.New("supervisor: no such worker")

// ErrBusy is what a message to a worker that does not read its messages
// gets: its queue stayed full until the sender's context was done.
var ErrBusy = errors.New("supervisor: the worker's message queue is full")

// Send sends msg to the worker process pid: a message frame that its
// cluster.Messages receives, or for a node worker its process 'message'.
// While a prefork worker's channel is full it waits for room, off the
// owner goroutine, until ctx is done; a node worker's channel queues up
// to its bound. Either way a worker that does not read gets ErrBusy.
func (e *Engine) Send(ctx context.Context, pid int, msg []byte) error {
	var sd sender
	var who string
	err := e.onWorker(ctx, pid, func(s *Supervisor, p *process) error {
		var ok bool
		if sd, ok = p.link.(sender); !ok {
			return fmt.Errorf("supervisor: a %s worker has no message channel", s.cfg.WorkerProtocol)
		}
		who = fmt.Sprintf("worker %d (pid %d)", p.slot.id, p.pid)
		return nil
	})
	if err != nil {
		return err
	}
	err = sd.send(ctx, msg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipc.ErrWouldBlock), errors.Is(err, nodeipc.ErrQueueFull):
		return fmt.Errorf("supervisor: send to %s: %w: %w", who, ErrBusy, err)
	case errors.Is(err, ipc.ErrPeerClosed), errors.Is(err, net.ErrClosed), errors.Is(err, nodeipc.ErrClosed):
		return fmt.Errorf("supervisor: send to %s: %w: %w", who, ErrNoWorker, err)
	}
	return fmt.Errorf("supervisor: send to %s: %w", who, err)
}

// Kill sends sig to the worker process pid, as Node's worker.kill does:
// the worker is taken out of rotation first, so its exit is intended
// (ExitedAfterDisconnect), not a crash, and costs no crash budget. Its
// slot gets a new worker by the respawn policy; one that outlives -grace
// after sig is killed.
func (e *Engine) Kill(ctx context.Context, pid int, sig syscall.Signal) error {
	return e.onWorker(ctx, pid, func(s *Supervisor, p *process) error {
		if !p.asked && !(s.reloader.roll != nil && s.reloader.roll.next == p) {
			// A reload's new worker is no slot's yet: its exit fails the
			// reload, as a crash would.
			s.dismiss(p, control.CauseKill)
			s.log.Info("killing worker", p.fields(zap.String("signal", signalName(sig)))...)
			s.emit(p, control.Event{Kind: control.EventDrain, Reason: control.CauseKill})
			s.after(s.cfg.Grace, evKillDue{p: p})
			if p.slot.cur == p {
				s.forks.respawnAfter(p.slot, control.CauseKill)
			}
		}
		return p.proc.Signal(sig)
	})
}

// Disconnect drains the worker process pid, as Node's worker.disconnect()
// does, and gives its slot a new worker at once; its exit is no crash.
func (e *Engine) Disconnect(ctx context.Context, pid int) error {
	return e.onWorker(ctx, pid, func(s *Supervisor, p *process) error {
		if p.asked {
			return nil // already leaving
		}
		if s.reloader.roll != nil && s.reloader.roll.next == p {
			return errors.New("supervisor: disconnect: the worker is a reload's, not yet ready")
		}
		s.drain(p, control.CauseDisconnect)
		if p.slot.cur == p {
			s.forks.respawnAfter(p.slot, control.CauseDisconnect)
		}
		return nil
	})
}

// onWorker runs fn on the owner goroutine with the live worker pid.
func (e *Engine) onWorker(ctx context.Context, pid int, fn func(*Supervisor, *process) error) error {
	err, cerr := call(ctx, e, func(s *Supervisor) error {
		p := s.live[pid]
		if p == nil || p.state == control.StateExited {
			return fmt.Errorf("%w: pid %d", ErrNoWorker, pid)
		}
		return fn(s, p)
	})
	return errors.Join(cerr, err)
}

// notOrphan reports whether the reaper must leave the zombie child pid
// alone: a worker, whose waiter takes its status, or a child in this
// process's own process group. Workers run in process groups of their own
// (Setpgid), and what they start inherits those, so an orphaned grandchild
// is never in ours; a child that is was started by this process's own
// code, such as a Go program that is its own primary running a command
// with os/exec, whose Wait must get its exit status.
func (s *Supervisor) notOrphan(pid int) bool {
	if s.owned.Has(pid) {
		return true
	}
	st, err := procfs.ReadStat(pid)
	return err == nil && st.PGRP == syscall.Getpgrp()
}

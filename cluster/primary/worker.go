package primary

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prefork/prefork/cluster"
	ctl "github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/supervisor"
)

// opTimeout bounds a Worker method's wait for the primary's owner loop,
// which answers at once unless the machine is badly overloaded.
const opTimeout = 5 * time.Second

// ErrNoWorker is the error, for errors.Is, of a Worker method called on a
// worker process that has exited.
var ErrNoWorker = supervisor.ErrNoWorker

// ErrBusy is the error, for errors.Is, of Worker.Send to a worker that does
// not read its messages: its channel stayed full.
var ErrBusy = supervisor.ErrBusy

// Worker is one worker process as its primary sees it: Node's
// cluster.Worker. A process that replaces it (after a crash, a reload or a
// Disconnect) is another Worker with the same ID.
type Worker struct {
	p            *Primary
	id, pid, gen int

	state           atomic.Value // a State
	disconnected    atomic.Bool
	dead            atomic.Bool
	afterDisconnect atomic.Bool
}

// State is where a worker is in its life: starting → ready → draining →
// exited. It tells a draining worker from the one that replaces it in the
// same slot (Primary.Workers during a reload).
type State string

// States of a Worker.
const (
	StateStarting State = "starting" // started, not serving yet
	StateReady    State = "ready"    // serving: EventListening
	StateDraining State = "draining" // asked to leave, finishing its connections: EventDisconnect
	StateExited   State = "exited"   // EventExit
)

// State returns the worker's state, as of its last event or Workers call.
func (w *Worker) State() State {
	st, _ := w.state.Load().(State)
	if st == "" {
		return StateStarting
	}
	return st
}

// setState records st, but never goes back from exited.
func (w *Worker) setState(st State) {
	if w.dead.Load() && st != StateExited {
		return
	}
	w.state.Store(st)
}

// ID is the worker's slot, 1..N: the process's cluster.ID(). Unlike Node's
// worker.id, the process that replaces this one keeps it.
func (w *Worker) ID() int { return w.id }

// PID is the worker process's id: Node's worker.process.pid.
func (w *Worker) PID() int { return w.pid }

// Generation is the reload generation the worker was started in: 1 for the
// first workers, one more for each reload. The process's
// cluster.Generation().
func (w *Worker) Generation() int { return w.gen }

// String describes the worker for logs.
func (w *Worker) String() string {
	return fmt.Sprintf("worker %d (pid %d, generation %d, %s)", w.id, w.pid, w.gen, w.State())
}

// Send sends msg, at most cluster.MaxMessage bytes, to the worker, which receives
// it on cluster.Messages (a node worker: process.on('message'), msg's
// JSON value, or msg as a string when it is not JSON). While the worker's
// channel is full it waits for room, up to 5s, then fails with ErrBusy;
// it fails with ErrNoWorker for a worker that has exited, and for one
// whose protocol has no channel (systemd, plain).
func (w *Worker) Send(msg []byte) error {
	if len(msg) > cluster.MaxMessage {
		return fmt.Errorf("%w: %d bytes", cluster.ErrMessageTooLarge, len(msg))
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := w.p.e.Send(ctx, w.pid, msg); err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	return nil
}

// Kill sends sig to the worker process: Node's worker.kill, whose default
// is SIGTERM (a Go worker on Serve or ListenAndServe then drains and
// exits). The exit is intended, as in Node: ExitedAfterDisconnect is true,
// its EventExit has Reason "kill", and it costs no crash budget. The slot
// gets a new worker at once under RespawnAuto; under RespawnManual the
// program forks one if it wants to. A worker that outlives Settings.Grace
// after sig is killed with SIGKILL.
func (w *Worker) Kill(sig syscall.Signal) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Its drain event, reason kill, marks it as leaving (translate).
	if err := w.p.e.Kill(ctx, w.pid, sig); err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	return nil
}

// Disconnect asks the worker to drain: it stops taking connections,
// finishes those it has and exits, within Settings.Grace or it is killed
// (Node's worker.disconnect). Its slot gets a new worker at once (under
// RespawnManual, when the program forks one), and ExitedAfterDisconnect
// reports true once it has gone.
func (w *Worker) Disconnect() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := w.p.e.Disconnect(ctx, w.pid); err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	w.afterDisconnect.Store(true)
	return nil
}

// IsConnected reports whether the worker still takes connections and
// messages: false from its EventDisconnect on.
func (w *Worker) IsConnected() bool { return !w.disconnected.Load() }

// IsDead reports whether the worker process has exited (its EventExit).
func (w *Worker) IsDead() bool { return w.dead.Load() }

// ExitedAfterDisconnect reports whether the worker left because it was
// asked to (Disconnect, a reload, a scale down, a stop, a recycle), rather
// than crashing: Node's worker.exitedAfterDisconnect. False while it runs,
// unless Disconnect was called.
func (w *Worker) ExitedAfterDisconnect() bool { return w.afterDisconnect.Load() }

// leaving records why the worker was asked to leave or exited.
func (w *Worker) leaving(reason string) {
	if reason != "" && reason != string(ctl.CauseCrash) {
		w.afterDisconnect.Store(true)
	}
}

package supervisor

import (
	"errors"
	"os"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// mode is how a scheduling mode (-mode) gets connections to workers: one
// type per mode, in mode_rr.go, mode_shared.go and mode_reuseport.go. The
// owner goroutine calls every method but pause.
type mode interface {
	// addr is the address actually bound; activated, whether the socket
	// came from systemd (LISTEN_FDS).
	addr() string
	activated() bool

	// startAccepting starts the supervisor's own accept loops, if the
	// mode has any; stopAccepting closes every listening socket (queued
	// connections still go to ready workers). Stopping twice is harmless.
	startAccepting() error
	stopAccepting()

	// prepare makes what a new worker for sl gets at fd 4, and the
	// supervisor's side of it, before the process starts. ctl is the
	// supervisor's end of the worker's control channel and ctlRemote the
	// worker's. On error nothing is left open.
	prepare(sl *slot, ctl *ipc.Channel, ctlRemote *os.File) (handles, error)

	// route lets a ready worker receive connections from the supervisor;
	// unroute takes it out of rotation (it drains, or is replaced).
	route(p *process)
	unroute(p *process)
	// exited hands on the connections an exited worker never took,
	// returning how many.
	exited(p *process) int
	// vacant: sl has no worker for now (it crashed or hung). retire: sl
	// was scaled away.
	vacant(sl *slot)
	retire(sl *slot)
	// pause stops (or resumes) sending p connections at the worker's own
	// request: it is near its descriptor limit. Called from p's control
	// reader, so that back-pressure takes effect at once.
	pause(p *process, paused bool)
	// tick runs from the owner's tick: rr takes a worker whose queue has
	// not moved out of rotation and hands its queue on.
	tick()

	// close closes connections still queued at the very end, returning
	// how many.
	close() int

	// handoff is the mode's handoff path, nil if it has none; observe
	// gives it the metrics' timing observer before any accept.
	handoff() *handoff
	observe(o observer)
	// loadReports says whether workers report closed connections, which
	// makes the supervisor's open-connection count exact (least-conn).
	loadReports() bool
}

// handles is what prepare makes for one worker.
type handles struct {
	file *os.File // the worker's fd 4; the caller closes it after the start
	t    *target  // the worker as the handoff sees it; nil if none
}

// abort releases what prepare made when the worker did not start.
func (h handles) abort() {
	if h.t != nil && h.t.node == nil {
		h.t.ch.Close()
		h.t.keep.Close()
	}
}

// newMode binds the listening sockets for cfg.Mode. The supervisor keeps
// them as bare descriptors (listener.Socket), outside its runtime poller.
func newMode(cfg Config, log *zap.Logger) (mode, error) {
	if cfg.Mode == ipc.ModeReusePort {
		return newReusePort(cfg, log)
	}
	ln, activated, err := bindOne(cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.Mode == ipc.ModeShared {
		return &shared{ln: ln, activated_: activated}, nil
	}
	return newRR(cfg, log, ln, activated), nil
}

// bindOne binds the one listening socket of rr and shared mode, or takes it
// from systemd (socket activation).
func bindOne(cfg Config, log *zap.Logger) (*listener.Socket, bool, error) {
	inherited, err := listener.Inherited()
	switch {
	case err == nil:
		for _, l := range inherited[1:] {
			log.Warn("ignoring extra inherited socket", zap.Stringer("addr", l.Addr()))
			l.Close()
		}
		sock, err := listener.Detach(inherited[0])
		return sock, true, err
	case !errors.Is(err, listener.ErrNotActivated):
		return nil, false, err
	}
	ln, err := listener.Listen(cfg.Listen)
	if err != nil {
		return nil, false, err
	}
	sock, err := listener.Detach(ln)
	return sock, false, err
}

// newTarget makes the handoff's view of a worker whose connections travel
// over ch: a target with keep, a duplicate of the worker's receiving end
// (remote), made now so that a failure is a failed start.
func newTarget(sl *slot, ch *ipc.Channel, remote *os.File) (*target, error) {
	dup, err := listener.Dup(remote)
	if err != nil {
		return nil, err
	}
	keep, err := ipc.NewChannel(dup) // takes dup
	if err != nil {
		return nil, err
	}
	return &target{slot: sl.id, ch: ch, keep: keep}, nil
}

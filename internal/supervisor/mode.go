package supervisor

import (
	"context"
	"errors"
	"os"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// mode is a scheduling mode's socket strategy (-mode), as Node's shared and
// round-robin handles are: which sockets exist, how a worker gets them,
// accepting and stopping, and a slot that empties or retires. One type per
// mode, in mode_rr.go, mode_shared.go and mode_reuseport.go. Routing,
// pausing, exits and load reports are the handoff's, which a mode that
// accepts connections itself returns. The owner goroutine calls every
// method.
type mode interface {
	// listeners are the sockets the workers serve, each with a name.
	listeners() []listening

	// prepare makes what a new worker for sl gets at fd 4, and the
	// supervisor's side of it, before the process starts. ctl is the
	// supervisor's end of the worker's control channel and ctlRemote the
	// worker's. On error nothing is left open.
	prepare(sl *slot, ctl *ipc.Channel, ctlRemote *os.File) (handles, error)

	// startAccepting starts the supervisor's own accept loops, if the
	// mode has any; stopAccepting closes every listening socket (queued
	// connections still go to ready workers). Stopping twice is harmless.
	startAccepting() error
	stopAccepting()

	// slot tells the mode what became of sl's worker (see slotChange).
	slot(sl *slot, c slotChange)

	// handoff is the mode's handoff, nil if the supervisor never touches
	// a connection (shared).
	handoff() *handoff.Handoff

	// settle waits, off the owner, up to a bound or ctx, until the mode is
	// at rest for an upgrade: no socket being retired (reuseport).
	settle(ctx context.Context)

	// save keeps the mode's sockets, and what it holds of the connections,
	// in st for an upgrade, or says why it cannot now; resume undoes what
	// save stopped, for an upgrade that did not happen.
	save(st *upgradeState) (resume func(), err error)
}

// listening is one listening address the workers serve.
type listening struct {
	name      string
	addr      string
	activated bool // the socket came from systemd (LISTEN_FDS)
}

// mainListener is the name of the -listen socket.
const mainListener = "main"

// addrOf is the address m's main listener is bound to.
func addrOf(m mode) string { return m.listeners()[0].addr }

// slotChange is what became of a slot's worker.
type slotChange int

const (
	slotFilled  slotChange = iota // a worker of the slot is ready and routed
	slotVacant                    // the slot has no worker for now: it crashed or hung
	slotRetired                   // the slot was scaled away
)

// handles is what prepare makes for one worker.
type handles struct {
	file *os.File        // the worker's fd 4; the caller closes it after the start
	t    *handoff.Target // the worker as the handoff sees it; nil if none
}

// abort releases what prepare made when the worker did not start.
func (h handles) abort() {
	if h.t != nil {
		h.t.Close()
	}
}

// route lets p, ready, receive connections: the handoff routes it, and its
// slot is filled.
func route(m mode, p *process) {
	m.handoff().Route(p.t)
	m.slot(p.slot, slotFilled)
}

// newMode binds the listening sockets for cfg.Mode. The supervisor keeps
// them as bare descriptors (listener.Socket), outside its runtime poller.
func newMode(cfg Config, log *zap.Logger) (mode, error) {
	if len(cfg.Listen) > 1 {
		return nil, usagef("several listeners are not served yet: give one -listen")
	}
	if cfg.Mode == ipc.ModeReusePort {
		return newReusePort(cfg, log)
	}
	ln, activated, err := bindOne(cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.Mode == ipc.ModeShared {
		return &shared{ln: ln, activated: activated}, nil
	}
	return newRR(cfg, log, ln, activated)
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
	specs, err := cfg.Listeners()
	if err != nil {
		return nil, false, err
	}
	fo, err := cfg.SocketFile()
	if err != nil {
		return nil, false, err
	}
	sock, err := listener.Bind(specs[0], fo)
	if err == nil && cfg.DeferAccept && specs[0].Network == listener.TCP {
		if err = sock.DeferAccept(); err != nil {
			sock.Close()
			return nil, false, err
		}
	}
	return sock, false, err
}

// framesTarget makes the handoff's view of a worker whose connections
// travel as frames over ch: keep, a duplicate of the worker's receiving
// end (remote), is made now so that a failure is a failed start. lent: ch
// is the worker's control channel, which its link owns.
func framesTarget(sl *slot, ch *ipc.Channel, remote *os.File, lent bool, log *zap.Logger) (*handoff.Target, error) {
	dup, err := listener.Dup(remote)
	if err != nil {
		return nil, err
	}
	keep, err := ipc.NewChannel(dup) // takes dup
	if err != nil {
		return nil, err
	}
	log = log.With(zap.Int("slot", sl.id))
	tr := handoff.NewFrames(ch, keep, log)
	if lent {
		tr = handoff.OverControl(ch, keep, log)
	}
	return handoff.NewTarget(sl.id, tr), nil
}

// keepListener records ln, the main listener's socket, in st.
func keepListener(st *upgradeState, ln *listener.Socket, activated bool) (err error) {
	st.Listener, err = st.keepListener(ln, roleListener, mainListener, 0)
	st.Activated = activated
	return err
}

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

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

// listening is one listener the workers serve: its name, the address it
// is bound to (HOST:PORT, or unix:/path), and the supervisor's socket.
type listening struct {
	name      string
	addr      string
	activated bool // the socket came from systemd (LISTEN_FDS)
	sock      *listener.Socket
}

// listeningOn is sock as the listener named name.
func listeningOn(name string, sock *listener.Socket, activated bool) listening {
	addr := sock.Addr().String()
	if sock.Addr().Network() == "unix" {
		addr = "unix:" + addr
	}
	return listening{name: name, addr: addr, activated: activated, sock: sock}
}

// unixSocket reports whether the listener is a Unix socket.
func (l listening) unixSocket() bool { return l.sock.Addr().Network() == "unix" }

// mainListener is the name an older image kept its one listener by.
const mainListener = "main"

// addrOf is the address m's first listener is bound to.
func addrOf(m mode) string { return m.listeners()[0].addr }

// closeListeners closes every socket, and removes the socket files the
// supervisor made if remove: a clean stop, not an upgrade.
func closeListeners(lns []listening, remove bool) {
	for _, l := range lns {
		l.sock.Close()
		if remove {
			l.sock.Remove()
		}
	}
}

// dupAll duplicates every listener's socket for a worker, in order.
func dupAll(lns []listening) ([]*os.File, error) {
	files := make([]*os.File, 0, len(lns))
	for _, l := range lns {
		f, err := listener.Dup(l.sock)
		if err != nil {
			closeFiles(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// slotChange is what became of a slot's worker.
type slotChange int

const (
	slotFilled  slotChange = iota // a worker of the slot is ready and routed
	slotVacant                    // the slot has no worker for now: it crashed or hung
	slotRetired                   // the slot was scaled away
)

// handles is what prepare makes for one worker.
type handles struct {
	// files are the worker's descriptors from fd 4 (prefork) or fd 3
	// (the others): rr's handoff channel, or every listener's socket in
	// listener order. The caller closes them after the start.
	files []*os.File
	t     *handoff.Target // the worker as the handoff sees it; nil if none
}

// close closes the caller's copies of the files.
func (h handles) close() { closeFiles(h.files) }

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
	if cfg.Mode == ipc.ModeReusePort {
		return newReusePort(cfg, log)
	}
	lns, err := bindListeners(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Mode == ipc.ModeShared {
		return &shared{lns: lns}, nil
	}
	return newRR(cfg, log, lns)
}

// bindListeners binds cfg's listeners in order, or takes every socket
// systemd passed (socket activation), named by LISTEN_FDNAMES. On error
// nothing is left bound.
func bindListeners(cfg Config) ([]listening, error) {
	specs, socks, err := listener.Activated()
	activated := err == nil
	switch {
	case errors.Is(err, listener.ErrNotActivated):
		if specs, err = cfg.Listeners(); err != nil {
			return nil, err
		}
		fo, err := cfg.SocketFile()
		if err != nil {
			return nil, err
		}
		if socks, err = listener.BindAll(specs, fo); err != nil {
			return nil, err
		}
		if err := deferAccept(cfg, socks); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	lns := make([]listening, len(specs))
	for i, s := range specs {
		lns[i] = listeningOn(s.Name, socks[i], activated)
	}
	return lns, nil
}

// deferAccept sets -defer-accept on every TCP listener, and closes them
// all (nothing left bound) if one refuses.
func deferAccept(cfg Config, socks []*listener.Socket) error {
	if !cfg.DeferAccept {
		return nil
	}
	for _, sock := range socks {
		if sock.Addr().Network() != "tcp" {
			continue
		}
		if err := sock.DeferAccept(); err != nil {
			for _, s := range socks {
				s.Close()
				s.Remove()
			}
			return err
		}
	}
	return nil
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

// keepListeners records every listener's socket in st, by name, and the
// listeners themselves in order.
func keepListeners(st *upgradeState, lns []listening) error {
	for i, l := range lns {
		fd, err := keepListening(st, l)
		if err != nil {
			return err
		}
		if i == 0 {
			st.Listener = fd
		}
	}
	return nil
}

// keepListening records l's socket in st by l's name, and l itself after
// the listeners recorded before, and returns the socket's descriptor.
func keepListening(st *upgradeState, l listening) (int, error) {
	fd, err := st.keepListener(l.sock, roleListener, l.name, 0)
	if err != nil {
		return -1, err
	}
	st.Listeners = append(st.Listeners, listenerState{Name: l.name, Path: l.sock.Path()})
	st.Activated = l.activated
	return fd, nil
}

// restoreListeners takes the listeners an upgrade kept, in their order;
// an older image's state has one, kept as mainListener.
func restoreListeners(cfg Config, st *upgradeState, kept *keptFDs) ([]listening, error) {
	var lns []listening
	for _, ls := range restoredListeners(st) {
		l, err := restoreListening(st, kept, ls, restoredName(cfg, st, ls))
		if err != nil {
			closeListeners(lns, false)
			return nil, err
		}
		lns = append(lns, l)
	}
	return lns, nil
}

// restoreListening takes the socket kept for ls, as the listener name.
func restoreListening(st *upgradeState, kept *keptFDs, ls listenerState, name string) (listening, error) {
	sock, _, err := kept.socket(roleListener, ls.Name)
	if err != nil {
		return listening{}, err
	}
	if ls.Path != "" {
		sock.Own(ls.Path) // the file this image removes on a clean stop
	}
	return listeningOn(name, sock, st.Activated), nil
}

// restoredName is the name of the listener kept as ls: its own, or, in an
// older image's state (one listener, mainListener), the first of cfg's.
func restoredName(cfg Config, st *upgradeState, ls listenerState) string {
	if specs, err := cfg.Listeners(); err == nil && len(st.Listeners) == 0 {
		return specs[0].Name
	}
	return ls.Name
}

// restoredListeners are the listeners restoreListeners takes from st, in
// order; an older image's state has one, kept as mainListener.
func restoredListeners(st *upgradeState) []listenerState {
	saved := st.Listeners
	if len(saved) == 0 {
		saved = []listenerState{{Name: mainListener}}
	}
	if dropListener != "" { // a test build: a restore that lost one
		saved = slices.DeleteFunc(slices.Clone(saved), func(ls listenerState) bool { return ls.Name == dropListener })
	}
	return saved
}

// checkKeptListeners makes sure this image's restore takes every listener
// the old image kept (a socket, or a reuseport group's sockets): one it
// left out would be closed with what no part takes, and its clients
// refused from then on. The rehearsal runs it (through restoreCheck), so
// that such a binary is refused before the execve, with the listener's
// name.
func checkKeptListeners(st *upgradeState) error {
	kept := keptOf(st)
	left := slices.DeleteFunc(slices.Clone(kept.fds), func(f fdRole) bool { return f.Role != roleListener && f.Role != rolePort })
	if len(left) == 0 {
		return nil // all lost across the execve: restoreMode binds them again
	}
	kept.fds = left
	for _, ls := range restoredListeners(st) {
		grouped := false
		for _, ok := kept.take(rolePort, ls.Name); ok; _, ok = kept.take(rolePort, ls.Name) {
			grouped = true
		}
		if _, ok := kept.take(roleListener, ls.Name); !ok && !grouped {
			return fmt.Errorf("upgrade: no listener %q kept", ls.Name)
		}
	}
	if len(kept.fds) > 0 {
		f := kept.fds[0]
		return fmt.Errorf("upgrade: this binary's restore would drop listener %q (descriptor %d): it takes %d of the %d kept",
			f.Name, f.FD, len(left)-len(kept.fds), len(left))
	}
	return nil
}

package supervisor

import (
	"errors"
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// reusePort is -mode reuseport: each TCP listener is an SO_REUSEPORT
// group with one socket per slot, and the kernel spreads that listener's
// connections over its sockets. A worker gets its slot's socket of every
// group. The supervisor keeps each slot's sockets across respawns, so
// their backlogs survive a worker's death; while a slot has no worker (it
// crashed or hung) the supervisor accepts on its sockets itself and hands
// the backlog to the other workers over their control channels, each
// connection with its listener's index, keeping a duplicate of each
// worker's end so that those, too, survive its death.
//
// A listener that cannot be a group is served as in shared mode: every
// worker accepts on its one socket. That is a Unix listener (a socket file
// is one socket: SO_REUSEPORT groups are TCP's) and a socket prefork
// inherited (fd:N, or systemd's): another process bound it, and the
// supervisor cannot add sockets to its port without SO_REUSEPORT set on
// it by that process, nor close the inherited one when its slot goes.
//
// A slot scaled away gives its sockets up: a BPF program attached to each
// group (listener.Steer) sends new connections only to the other slots'
// sockets, the supervisor accepts what was already queued on them until
// nothing has arrived for retireQuiet, then takes each out of its group
// and closes it (see handoff.Retiring).
type reusePort struct {
	// lns are the listeners in the workers' order; a group's has no
	// socket (listeners fills in its first).
	lns []listening
	// groups[i] is lns[i]'s group; nil for a listener served as shared.
	groups []*portGroup
	// deferAccept: set TCP_DEFER_ACCEPT on the sockets it binds
	// (-defer-accept); inherited ones keep what they have.
	deferAccept bool
	log         *zap.Logger
	h           *handoff.Handoff
	quiet       time.Duration // retireQuiet; shorter in tests
	// adoptVacant: workers can be handed connections (see vacant).
	adoptVacant bool

	// mu guards the groups' sockets and closed: the owner goroutine and
	// the emptying of retired sockets, which finish on their own
	// goroutines, change them.
	mu       sync.Mutex
	closed   bool
	retiring sync.WaitGroup
	// past counts what the accept loops stopped since accepted, by
	// listener name (see accepted).
	past map[string]uint64
}

// portGroup is one TCP listener's SO_REUSEPORT group.
type portGroup struct {
	index int                 // the listener's, in the workers' order
	addr  string              // HOST:PORT it is bound to: a new slot's socket joins there
	socks map[int]*portSocket // by slot id: every slot's, and the retired ones still emptied
	order []*portSocket       // the kernel's order of the group's sockets (see listener.Steer)
}

// portSocket is one slot's socket of a group, and the supervisor's accept
// loop on it while the slot has no ready worker, or its emptying once the
// slot is gone.
type portSocket struct {
	id     int
	g      *portGroup
	ln     *listener.Socket
	orphan *handoff.AcceptLoop
	// retired: scaled away; no connection is steered to it. emptying is
	// non-nil while the supervisor takes what is queued on it.
	retired  bool
	emptying *handoff.Retiring
}

// retireQuiet is how long a retired socket must go without a new
// connection before it is closed. Once the group's program steers new SYNs
// elsewhere, what still arrives is what was queued, and handshakes whose
// SYN came before the program changed: those complete within a round trip,
// or, when the SYN-ACK was lost, after its retransmission 1s later (the
// initial RTO). 1.5s covers one such loss.
const retireQuiet = 1500 * time.Millisecond

// newReusePort binds cfg's listeners: a group of cfg.Workers sockets for
// each TCP listener, slots 1..N, and one socket for each of the others.
// Under socket activation every socket is systemd's, served as shared. On
// error nothing is left bound.
func newReusePort(cfg Config, log *zap.Logger) (*reusePort, error) {
	m, err := reusePortMode(cfg, log)
	if err != nil {
		return nil, err
	}
	specs, socks, err := listener.Activated()
	switch {
	case err == nil:
		for i, s := range specs {
			m.share(listeningOn(s.Name, socks[i], true))
		}
		return m, nil
	case !errors.Is(err, listener.ErrNotActivated):
		return nil, err
	}
	if specs, err = cfg.Listeners(); err != nil {
		return nil, err
	}
	fo, err := cfg.SocketFile()
	if err != nil {
		return nil, err
	}
	ids := make([]int, cfg.Workers)
	for i := range ids {
		ids[i] = i + 1
	}
	for _, s := range specs {
		if err := m.bind(cfg, s, fo, ids); err != nil {
			m.close(true)
			return nil, err
		}
	}
	return m, nil
}

// reusePortMode is the mode without listeners yet.
func reusePortMode(cfg Config, log *zap.Logger) (*reusePort, error) {
	h, err := handoff.New("round-robin", log, cfg.QueueMax, cfg.QueueTimeout)
	if err != nil {
		return nil, err
	}
	return &reusePort{log: log, h: h, quiet: retireQuiet, adoptVacant: newProtocol(cfg).receives(),
		deferAccept: cfg.DeferAccept}, nil
}

// bind adds the listener s: a group with a socket for each slot of ids if
// it is a TCP address, else its one socket, shared.
func (m *reusePort) bind(cfg Config, s listener.Spec, fo listener.FileOptions, ids []int) error {
	if s.Network != listener.TCP {
		sock, err := listener.Bind(s, fo)
		if err != nil {
			return err
		}
		if err := deferAccept(cfg, []*listener.Socket{sock}); err != nil {
			return err
		}
		m.share(listeningOn(s.Name, sock, false))
		return nil
	}
	lns, err := listener.ListenReusePort(s.Addr, len(ids))
	if err != nil {
		return &listener.BindError{Spec: s, Err: errors.Unwrap(err)} // drop "listener: "
	}
	socks, err := listener.DetachAll(lns)
	if err != nil {
		return &listener.BindError{Spec: s, Err: err}
	}
	if m.deferAccept {
		for _, sock := range socks {
			if err := sock.DeferAccept(); err != nil {
				closeSockets(socks)
				return &listener.BindError{Spec: s, Err: err}
			}
		}
	}
	m.addGroup(s.Name, socks, ids)
	return nil
}

// addGroup adds the listener name served by the group socks, slot ids[i]'s
// socket at i, in the order listen() was called on them: the group's.
func (m *reusePort) addGroup(name string, socks []*listener.Socket, ids []int) {
	g := &portGroup{index: len(m.lns), addr: socks[0].Addr().String(), socks: map[int]*portSocket{}}
	for i, ln := range socks {
		ps := &portSocket{id: ids[i], g: g, ln: ln}
		g.socks[ps.id] = ps
		g.order = append(g.order, ps)
	}
	l := listeningOn(name, socks[0], false)
	l.sock = nil // the group's first socket changes as retired ones close
	m.lns = append(m.lns, l)
	m.groups = append(m.groups, g)
}

// share adds l, a listener every worker accepts on, as in shared mode.
func (m *reusePort) share(l listening) {
	why := "a Unix socket is one socket: SO_REUSEPORT groups are TCP's"
	if l.sock.Addr().Network() == "tcp" {
		why = "an inherited socket cannot be grouped: another process bound it"
	}
	m.log.Info("serving the listener as in shared mode", zap.String("listener", l.name), zap.String("addr", l.addr),
		zap.String("why", why))
	m.lns = append(m.lns, l)
	m.groups = append(m.groups, nil)
}

// close closes every socket, removing the socket files the mode made if
// remove (a clean stop, or a failed start). The caller has stopped what
// accepts on them.
func (m *reusePort) close(remove bool) {
	m.mu.Lock()
	for _, g := range m.groups {
		if g != nil {
			for _, ps := range g.socks {
				ps.ln.Close()
			}
		}
	}
	m.mu.Unlock()
	closeListeners(m.sharedListeners(), remove)
}

// sharedListeners are the listeners that are no group.
func (m *reusePort) sharedListeners() []listening {
	var out []listening
	for i, l := range m.lns {
		if m.groups[i] == nil {
			out = append(out, l)
		}
	}
	return out
}

// listeners are lns, each group's with its first socket.
func (m *reusePort) listeners() []listening {
	out := slices.Clone(m.lns)
	m.mu.Lock() // a group's order changes as retired sockets close
	defer m.mu.Unlock()
	for i, g := range m.groups {
		if g != nil && len(g.order) > 0 {
			out[i].sock = g.order[0].ln
		}
	}
	return out
}

func (m *reusePort) startAccepting() error     { return nil }
func (m *reusePort) handoff() *handoff.Handoff { return m.h }

// stopAccepting stops the accept loops and the emptying of retired sockets
// (which take what is queued on them first), then closes every socket.
func (m *reusePort) stopAccepting() {
	m.mu.Lock()
	m.closed = true
	m.each(func(ps *portSocket) {
		m.adopt(ps, false)
		ps.emptying.Cancel(handoff.RetireStop)
	})
	m.mu.Unlock()
	m.retiring.Wait()
	m.close(true)
	m.h.Flush()
}

// each calls f on every group's every socket. Called with m.mu held.
func (m *reusePort) each(f func(ps *portSocket)) {
	for _, g := range m.groups {
		if g != nil {
			for _, ps := range g.socks {
				f(ps)
			}
		}
	}
}

// prepare gives the worker a socket for each listener, in order: its
// slot's of each group, binding one for a slot that never had one, and the
// shared ones; and it makes the worker's control channel, if it has one,
// its handoff target.
func (m *reusePort) prepare(sl *slot, ctl *ipc.Channel, ctlRemote *os.File) (handles, error) {
	lns := slices.Clone(m.lns)
	for i, g := range m.groups {
		if g == nil {
			continue
		}
		ps, err := m.socket(g, sl.id)
		if err != nil {
			return handles{}, err
		}
		lns[i].sock = ps.ln
	}
	files, err := dupAll(lns)
	if err != nil {
		return handles{}, err
	}
	if ctl == nil {
		return handles{files: files}, nil // nothing can be handed to it
	}
	t, err := framesTarget(sl, ctl, ctlRemote, true, m.log)
	if err != nil {
		closeFiles(files)
		return handles{}, err
	}
	return handles{files: files, t: t}, nil
}

// socket returns slot id's socket of g: its own, or a retired one still
// being emptied, which takes new connections again; or a new one bound into
// the group for a slot added by a scale-up.
func (m *reusePort) socket(g *portGroup, id int) (*portSocket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps, ok := g.socks[id]; ok {
		if ps.retired {
			ps.emptying.Cancel(handoff.RetireRevive)
			ps.emptying, ps.retired = nil, false
			m.steer(g)
		}
		return ps, nil
	}
	ln, err := listener.ListenOne(g.addr)
	if err != nil {
		return nil, err
	}
	sock, err := listener.Detach(ln)
	if err != nil {
		return nil, err
	}
	if m.deferAccept {
		if err := sock.DeferAccept(); err != nil {
			sock.Close()
			return nil, err
		}
	}
	ps := &portSocket{id: id, g: g, ln: sock}
	g.socks[id] = ps
	g.order = append(g.order, ps) // listen() appends it to the group
	m.steer(g)
	return ps, nil
}

// slot: a filled slot's worker takes its own sockets' connections again;
// a vacant one's are taken by the supervisor for the other workers; a
// retired one's sockets are given up.
func (m *reusePort) slot(sl *slot, c slotChange) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.groups {
		if g == nil {
			continue // shared: the workers' own
		}
		ps, ok := g.socks[sl.id]
		if !ok {
			continue
		}
		switch c {
		case slotFilled:
			m.adopt(ps, false)
		case slotVacant:
			m.vacant(ps)
		case slotRetired:
			m.retire(ps)
		}
	}
}

// vacant: the supervisor accepts on the slot's socket until a new worker is
// ready, so connections the kernel queued there go to the other workers
// instead of waiting for the respawn. Workers without a control channel
// (-worker-protocol systemd or plain) cannot be handed them: those wait in
// the slot's backlog until its new worker takes them. Called with m.mu
// held.
func (m *reusePort) vacant(ps *portSocket) {
	if !ps.retired && !m.closed && m.adoptVacant {
		m.adopt(ps, true)
	}
}

// adopt starts (on) or stops the supervisor's accept loop on the socket.
// Called with m.mu held.
func (m *reusePort) adopt(ps *portSocket, on bool) {
	switch {
	case !on && ps.orphan != nil:
		ps.orphan.Stop()
		if m.past == nil {
			m.past = map[string]uint64{}
		}
		m.past[m.lns[ps.g.index].name] += ps.orphan.Accepted()
		ps.orphan = nil
	case on && ps.orphan == nil:
		loop, err := m.h.Accept(ps.ln, ps.g.index)
		if err != nil {
			m.log.Error("cannot adopt the backlog of a slot", m.socketFields(ps, zap.Error(err))...)
			return
		}
		ps.orphan = loop
	}
}

// accepted is how many connections the supervisor accepted on each
// listener's sockets while their slot was vacant, and handed to the other
// workers: none on a listener served as shared, where it never accepts.
// The metrics show it (prefork_connections_accepted_total).
func (m *reusePort) accepted() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := make(map[string]uint64, len(m.lns))
	for _, l := range m.lns {
		n[l.name] = m.past[l.name]
	}
	m.each(func(ps *portSocket) { n[m.lns[ps.g.index].name] += ps.orphan.Accepted() })
	return n
}

// closeSockets closes every socket of socks.
func closeSockets(socks []*listener.Socket) {
	for _, s := range socks {
		s.Close()
	}
}

package supervisor

import (
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// reusePort is -mode reuseport: one SO_REUSEPORT socket per slot, and the
// kernel spreads connections over the sockets. The supervisor keeps each
// slot's socket across respawns, so its backlog survives a worker's death;
// while a slot has no worker (it crashed or hung) the supervisor accepts on
// that socket itself and hands the backlog to the other workers over their
// control channels, keeping a duplicate of each worker's end so that those,
// too, survive its death.
//
// A slot scaled away gives its socket up: a BPF program attached to the
// group (listener.Steer) sends new connections only to the other slots'
// sockets, the supervisor accepts what was already queued on it until
// nothing has arrived for retireQuiet, then takes it out of the group and
// closes it (see drain).
type reusePort struct {
	listen string
	log    *zap.Logger
	bal    balancer.Balancer[*target]
	h      *handoff
	quiet  time.Duration // retireQuiet; shorter in tests
	// adoptVacant: workers can be handed connections (see vacant).
	adoptVacant bool

	// mu guards what follows: the owner goroutine and the drains of
	// retired sockets, which finish on their own goroutines, change it.
	mu     sync.Mutex
	socks  map[int]*portSocket // by slot id: every slot's, and the retired ones still draining
	group  []*portSocket       // the kernel's order of the group's sockets (see listener.Steer)
	closed bool
	drains sync.WaitGroup
}

// portSocket is one slot's socket, and the supervisor's accept loop on it
// while the slot has no ready worker, or its drain once the slot is gone.
type portSocket struct {
	id     int
	ln     *listener.Socket
	orphan *acceptLoop
	// retired: scaled away; no connection is steered to it. drain is
	// non-nil while the supervisor takes what is queued on it.
	retired bool
	drain   *drain
}

func newReusePort(cfg Config, log *zap.Logger) (*reusePort, error) {
	if lns, err := listener.Inherited(); err == nil {
		for _, l := range lns {
			l.Close()
		}
		return nil, usagef("socket activation (LISTEN_FDS) cannot be used with -mode reuseport: it needs one socket per worker, bound by the supervisor; use -mode rr or shared")
	}
	lns, err := listener.ListenReusePort(cfg.Listen, cfg.Workers)
	if err != nil {
		return nil, err
	}
	socks, err := listener.DetachAll(lns)
	if err != nil {
		return nil, err
	}
	ids := make([]int, len(socks))
	for i := range ids {
		ids[i] = i + 1
	}
	return reusePortOver(cfg, log, socks, ids), nil
}

// reusePortOver makes the mode over socks, slot ids[i]'s socket at i, in
// the order listen() was called on them: the group's.
func reusePortOver(cfg Config, log *zap.Logger, socks []*listener.Socket, ids []int) *reusePort {
	bal := balancer.NewRoundRobin[*target]()
	m := &reusePort{log: log, bal: bal, h: newHandoff(bal, log, cfg.QueueMax, cfg.QueueTimeout), quiet: retireQuiet, socks: map[int]*portSocket{},
		adoptVacant: newProtocol(cfg).receives()}
	for i, ln := range socks {
		ps := &portSocket{id: ids[i], ln: ln}
		m.socks[ps.id] = ps
		m.group = append(m.group, ps)
	}
	m.listen = socks[0].Addr().String()
	return m
}

// restoreReusePort takes the sockets an upgrade kept, in the group's order
// (see upgrade.go).
func restoreReusePort(cfg Config, log *zap.Logger, st *upgradeState) (*reusePort, error) {
	socks, err := inheritSockets(st.Ports)
	if err != nil {
		return nil, err
	}
	return reusePortOver(cfg, log, socks, st.PortSlots), nil
}

func (m *reusePort) addr() string          { return m.listen }
func (m *reusePort) activated() bool       { return false }
func (m *reusePort) startAccepting() error { return nil }

// stopAccepting stops the accept loops and drains (which take what is
// queued on their sockets first), then closes every socket.
func (m *reusePort) stopAccepting() {
	m.mu.Lock()
	m.closed = true
	for _, ps := range m.socks {
		ps.adopt(nil, false)
		ps.drain.cancel(drainStop)
	}
	m.mu.Unlock()
	m.drains.Wait()
	m.mu.Lock()
	for _, ps := range m.socks {
		ps.ln.Close()
	}
	m.mu.Unlock()
	m.h.flush()
}

// prepare gives the worker its slot's socket, binding one for a slot that
// never had one, and makes the worker's control channel, if it has one, its
// handoff target.
func (m *reusePort) prepare(sl *slot, ctl *ipc.Channel, ctlRemote *os.File) (handles, error) {
	ps, err := m.socket(sl.id)
	if err != nil {
		return handles{}, err
	}
	f, err := listener.Dup(ps.ln)
	if err != nil {
		return handles{}, err
	}
	if ctl == nil {
		return handles{file: f}, nil // nothing can be handed to it
	}
	t, err := newTarget(sl, ctl, ctlRemote)
	if err != nil {
		f.Close()
		return handles{}, err
	}
	return handles{file: f, t: t}, nil
}

// socket returns slot id's socket: its own, or a retired one still
// draining, which takes new connections again; or a new one bound into the
// group for a slot added by a scale-up.
func (m *reusePort) socket(id int) (*portSocket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps, ok := m.socks[id]; ok {
		if ps.retired {
			ps.drain.cancel(drainRevive)
			ps.drain, ps.retired = nil, false
			m.steer()
		}
		return ps, nil
	}
	ln, err := listener.ListenOne(m.listen)
	if err != nil {
		return nil, err
	}
	sock, err := listener.Detach(ln)
	if err != nil {
		return nil, err
	}
	ps := &portSocket{id: id, ln: sock}
	m.socks[id] = ps
	m.group = append(m.group, ps) // listen() appends it to the group
	m.steer()
	return ps, nil
}

// steer points the group's BPF program at every socket but the retired
// ones, by their index in the group. It reports whether the kernel took
// it; if not, the previous program (if any) stays and retired sockets must
// stay open.
func (m *reusePort) steer() bool {
	var to []int
	for i, ps := range m.group {
		if !ps.retired {
			to = append(to, i)
		}
	}
	if err := listener.Steer(m.group[0].ln, to); err != nil {
		m.log.Warn("cannot steer connections away from retired sockets; they stay open", zap.Error(err))
		return false
	}
	return true
}

// route: the worker takes its own socket's connections again, and may be
// handed another vacant slot's.
func (m *reusePort) route(p *process) {
	if p.t != nil {
		m.bal.Add(p.t)
		m.h.flush()
	}
	m.mu.Lock()
	if ps := m.socks[p.slot.id]; ps != nil {
		ps.adopt(nil, false)
	}
	m.mu.Unlock()
}

func (m *reusePort) unroute(p *process) {
	if p.t != nil {
		m.bal.Remove(p.t)
	}
}

func (m *reusePort) exited(p *process) int { return m.h.recover(p.t) }

// vacant: the supervisor accepts on the slot's socket until a new worker is
// ready, so connections the kernel queued there go to the other workers
// instead of waiting for the respawn. Workers without a control channel
// (-worker-protocol systemd or plain) cannot be handed them: those wait in
// the slot's backlog until its new worker takes them.
func (m *reusePort) vacant(sl *slot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps := m.socks[sl.id]; ps != nil && !ps.retired && !m.closed && m.adoptVacant {
		ps.adopt(m, true)
	}
}

// retire gives a scaled-away slot's socket up: no new connection is
// steered to it, and a drain hands what is queued on it to the remaining
// workers before closing it. Closing it at once would reset what is queued
// (and, unless net.ipv4.tcp_migrate_req is set, the handshakes in
// progress), and the kernel would keep hashing new connections to it until
// then. If the kernel refuses the program, the socket stays open with the
// supervisor accepting on it, as for a vacant slot.
func (m *reusePort) retire(sl *slot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.socks[sl.id]
	if ps == nil || ps.retired || m.closed {
		return
	}
	ps.adopt(nil, false)
	ps.retired = true
	if !m.steer() {
		ps.retired = false
		ps.adopt(m, true)
		return
	}
	m.startDrain(ps)
}

// startDrain starts the drain of a retired socket. Out of descriptors (it
// needs one), it tries again after the quiet period: the socket gets no new
// connections meanwhile, and what is queued on it waits in its backlog.
// Called with m.mu held.
func (m *reusePort) startDrain(ps *portSocket) {
	d, err := newDrain(ps.ln)
	if err != nil {
		m.log.Error("cannot drain a retired socket yet; retrying", zap.Int("slot", ps.id), zap.Duration("in", m.quiet), zap.Error(err))
		time.AfterFunc(m.quiet, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if ps.retired && ps.drain == nil && !m.closed && m.socks[ps.id] == ps {
				m.startDrain(ps)
			}
		})
		return
	}
	ps.drain = d
	m.drains.Add(1)
	go func() {
		defer m.drains.Done()
		if d.run(m.h, m.quiet) {
			m.closeRetired(ps, d)
		}
		d.f.Close()
	}()
}

// closeRetired takes a drained socket out of the group and closes it,
// unless a scale-up took it back or the supervisor stopped meanwhile. It
// accepts what arrived since the drain's last look first: after
// retireQuiet without arrivals, only a handshake whose SYN-ACK was lost
// twice can still complete on it.
func (m *reusePort) closeRetired(ps *portSocket, d *drain) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps.drain != d || m.closed {
		return
	}
	d.sweep(m.h)
	if err := listener.Unlisten(ps.ln); err != nil {
		m.log.Error("cannot close a retired socket; it stays open", zap.Int("slot", ps.id), zap.Error(err))
		ps.drain, ps.retired = nil, false // it is still in the group: steer to it again
		m.steer()
		ps.adopt(m, true)
		return
	}
	// The kernel moved the group's last socket into ps's place.
	i := slices.Index(m.group, ps)
	last := len(m.group) - 1
	m.group[i] = m.group[last]
	m.group = m.group[:last]
	delete(m.socks, ps.id)
	ps.drain = nil
	ps.ln.Close()
	m.steer()
}

// adopt starts (on) or stops the supervisor's accept loop on the socket.
func (ps *portSocket) adopt(m *reusePort, on bool) {
	switch {
	case !on:
		ps.orphan.stop()
		ps.orphan = nil
	case ps.orphan == nil:
		loop, err := m.h.accept(ps.ln)
		if err != nil {
			m.log.Error("cannot adopt the backlog of a slot", zap.Stringer("addr", ps.ln.Addr()), zap.Error(err))
			return
		}
		ps.orphan = loop
	}
}

func (m *reusePort) close() int         { return m.h.closeQueue() }
func (m *reusePort) handoff() *handoff  { return m.h }
func (m *reusePort) observe(o observer) { m.h.obs = o }
func (m *reusePort) loadReports() bool  { return false }

func (m *reusePort) pause(p *process, paused bool) { m.h.pause(p.t, paused) }
func (m *reusePort) tick()                         { m.h.check(time.Now()) }

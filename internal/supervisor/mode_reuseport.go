package supervisor

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/handoff"
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
// closes it (see handoff.Retiring).
type reusePort struct {
	listen string
	// deferAccept: set TCP_DEFER_ACCEPT on the sockets it binds
	// (-defer-accept); inherited ones keep what they have.
	deferAccept bool
	log         *zap.Logger
	h           *handoff.Handoff
	quiet       time.Duration // retireQuiet; shorter in tests
	// adoptVacant: workers can be handed connections (see vacant).
	adoptVacant bool

	// mu guards what follows: the owner goroutine and the emptying of
	// retired sockets, which finish on their own goroutines, change it.
	mu       sync.Mutex
	socks    map[int]*portSocket // by slot id: every slot's, and the retired ones still emptied
	group    []*portSocket       // the kernel's order of the group's sockets (see listener.Steer)
	closed   bool
	retiring sync.WaitGroup
}

// portSocket is one slot's socket, and the supervisor's accept loop on it
// while the slot has no ready worker, or its emptying once the slot is gone.
type portSocket struct {
	id     int
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

func newReusePort(cfg Config, log *zap.Logger) (*reusePort, error) {
	if lns, err := listener.Inherited(); err == nil {
		for _, l := range lns {
			l.Close()
		}
		return nil, usagef("socket activation (LISTEN_FDS) cannot be used with -mode reuseport: it needs one socket per worker, bound by the supervisor; use -mode rr or shared")
	}
	specs, err := cfg.Listeners()
	if err != nil {
		return nil, err
	}
	if specs[0].Network != listener.TCP {
		return nil, usagef("-mode reuseport needs a TCP listener: %s is not", specs[0].Address())
	}
	lns, err := listener.ListenReusePort(specs[0].Addr, cfg.Workers)
	if err != nil {
		return nil, err
	}
	socks, err := listener.DetachAll(lns)
	if err != nil {
		return nil, err
	}
	if cfg.DeferAccept {
		for _, s := range socks {
			if err := s.DeferAccept(); err != nil {
				for _, s := range socks {
					s.Close()
				}
				return nil, err
			}
		}
	}
	ids := make([]int, len(socks))
	for i := range ids {
		ids[i] = i + 1
	}
	return reusePortOver(cfg, log, socks, ids)
}

// reusePortOver makes the mode over socks, slot ids[i]'s socket at i, in
// the order listen() was called on them: the group's.
func reusePortOver(cfg Config, log *zap.Logger, socks []*listener.Socket, ids []int) (*reusePort, error) {
	h, err := handoff.New("round-robin", log, cfg.QueueMax, cfg.QueueTimeout)
	if err != nil {
		return nil, err
	}
	m := &reusePort{log: log, h: h, quiet: retireQuiet, socks: map[int]*portSocket{},
		adoptVacant: newProtocol(cfg).receives(), deferAccept: cfg.DeferAccept}
	for i, ln := range socks {
		ps := &portSocket{id: ids[i], ln: ln}
		m.socks[ps.id] = ps
		m.group = append(m.group, ps)
	}
	m.listen = socks[0].Addr().String()
	return m, nil
}

// restoreReusePort takes the sockets an upgrade kept, in the group's order
// (see upgrade.go).
func restoreReusePort(cfg Config, log *zap.Logger, kept *keptFDs) (*reusePort, error) {
	var socks []*listener.Socket
	var ids []int
	for kept.has(rolePort) {
		sock, id, err := kept.socket(rolePort, mainListener)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, err
		}
		socks, ids = append(socks, sock), append(ids, id)
	}
	return reusePortOver(cfg, log, socks, ids)
}

func (m *reusePort) listeners() []listening {
	return []listening{{name: mainListener, addr: m.listen}}
}

func (m *reusePort) startAccepting() error     { return nil }
func (m *reusePort) handoff() *handoff.Handoff { return m.h }

// stopAccepting stops the accept loops and the emptying of retired sockets
// (which take what is queued on them first), then closes every socket.
func (m *reusePort) stopAccepting() {
	m.mu.Lock()
	m.closed = true
	for _, ps := range m.socks {
		ps.adopt(nil, false)
		ps.emptying.Cancel(handoff.RetireStop)
	}
	m.mu.Unlock()
	m.retiring.Wait()
	m.mu.Lock()
	for _, ps := range m.socks {
		ps.ln.Close()
	}
	m.mu.Unlock()
	m.h.Flush()
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
	t, err := framesTarget(sl, ctl, ctlRemote, true, m.log)
	if err != nil {
		f.Close()
		return handles{}, err
	}
	return handles{file: f, t: t}, nil
}

// socket returns slot id's socket: its own, or a retired one still
// being emptied, which takes new connections again; or a new one bound into the
// group for a slot added by a scale-up.
func (m *reusePort) socket(id int) (*portSocket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps, ok := m.socks[id]; ok {
		if ps.retired {
			ps.emptying.Cancel(handoff.RetireRevive)
			ps.emptying, ps.retired = nil, false
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
	if m.deferAccept {
		if err := sock.DeferAccept(); err != nil {
			sock.Close()
			return nil, err
		}
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

// slot: a filled slot's worker takes its own socket's connections again;
// a vacant one's are taken by the supervisor for the other workers; a
// retired one's socket is given up.
func (m *reusePort) slot(sl *slot, c slotChange) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.socks[sl.id]
	if ps == nil {
		return
	}
	switch c {
	case slotFilled:
		ps.adopt(nil, false)
	case slotVacant:
		m.vacant(ps)
	case slotRetired:
		m.retire(ps)
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
		ps.adopt(m, true)
	}
}

// retire gives a scaled-away slot's socket up: no new connection is
// steered to it, and the supervisor hands what is queued on it to the
// remaining workers before closing it. Closing it at once would reset what
// is queued (and, unless net.ipv4.tcp_migrate_req is set, the handshakes
// in progress), and the kernel would keep hashing new connections to it
// until then. If the kernel refuses the program, the socket stays open
// with the supervisor accepting on it, as for a vacant slot. Called with
// m.mu held.
func (m *reusePort) retire(ps *portSocket) {
	if ps.retired || m.closed {
		return
	}
	ps.adopt(nil, false)
	ps.retired = true
	if !m.steer() {
		ps.retired = false
		ps.adopt(m, true)
		return
	}
	m.startRetiring(ps)
}

// startRetiring starts emptying a retired socket. Out of descriptors (it
// needs one), it tries again after the quiet period: the socket gets no new
// connections meanwhile, and what is queued on it waits in its backlog.
// Called with m.mu held.
func (m *reusePort) startRetiring(ps *portSocket) {
	r, err := m.h.Retire(ps.ln)
	if err != nil {
		m.log.Error("cannot empty a retired socket yet; retrying", zap.Int("slot", ps.id), zap.Duration("in", m.quiet), zap.Error(err))
		time.AfterFunc(m.quiet, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if ps.retired && ps.emptying == nil && !m.closed && m.socks[ps.id] == ps {
				m.startRetiring(ps)
			}
		})
		return
	}
	ps.emptying = r
	m.retiring.Add(1)
	go func() {
		defer m.retiring.Done()
		if r.Run(m.quiet) {
			m.closeRetired(ps, r)
		}
		r.Close()
	}()
}

// closeRetired takes an emptied socket out of the group and closes it,
// unless a scale-up took it back or the supervisor stopped meanwhile. It
// accepts what arrived since the last look first: after retireQuiet
// without arrivals, only a handshake whose SYN-ACK was lost twice can
// still complete on it.
func (m *reusePort) closeRetired(ps *portSocket, r *handoff.Retiring) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps.emptying != r || m.closed {
		return
	}
	r.Sweep()
	if err := listener.Unlisten(ps.ln); err != nil {
		m.log.Error("cannot close a retired socket; it stays open", zap.Int("slot", ps.id), zap.Error(err))
		ps.emptying, ps.retired = nil, false // it is still in the group: steer to it again
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
	ps.emptying = nil
	ps.ln.Close()
	m.steer()
}

// adopt starts (on) or stops the supervisor's accept loop on the socket.
func (ps *portSocket) adopt(m *reusePort, on bool) {
	switch {
	case !on:
		ps.orphan.Stop()
		ps.orphan = nil
	case ps.orphan == nil:
		loop, err := m.h.Accept(ps.ln)
		if err != nil {
			m.log.Error("cannot adopt the backlog of a slot", zap.Stringer("addr", ps.ln.Addr()), zap.Error(err))
			return
		}
		ps.orphan = loop
	}
}

// save keeps each slot's socket in st, in the group's order. Only at
// rest: the state has no place for connections the handoff holds (those
// of a vacant slot's socket), nor for a socket being retired.
func (m *reusePort) save(st *upgradeState) (func(), error) {
	none := func() {}
	if n := m.h.Pending(); n > 0 {
		return none, fmt.Errorf("not while %d connections wait for a worker", n)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ps := range m.socks {
		if ps.retired || ps.emptying != nil || ps.orphan != nil { // see settling
			return none, fmt.Errorf("not while slot %d's socket is retiring or vacant", ps.id)
		}
	}
	for _, ps := range m.group {
		fd, err := st.keepListener(ps.ln, rolePort, mainListener, ps.id)
		if err != nil {
			return none, err
		}
		st.Ports = append(st.Ports, fd)
		st.PortSlots = append(st.PortSlots, ps.id)
	}
	return none, nil
}

// settling reports whether a socket is being retired, or a slot's socket
// is vacant: save refuses then.
func (m *reusePort) settling() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ps := range m.socks {
		if ps.retired || ps.emptying != nil || ps.orphan != nil {
			return true
		}
	}
	return false
}

// settleWait bounds how long an upgrade waits for the mode's sockets to
// come to rest: a socket retired by a scale-down is emptied for
// retireQuiet after its last arrival.
const settleWait = 10 * time.Second

// settle waits, up to settleWait or ctx, until m holds no socket being
// retired: `ctl scale` answers once the removed workers have exited, while
// their reuseport sockets are still emptied, and an upgrade right after
// it would be refused.
func (m *reusePort) settle(ctx context.Context) {
	deadline := time.Now().Add(settleWait)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for m.settling() && time.Now().Before(deadline) {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

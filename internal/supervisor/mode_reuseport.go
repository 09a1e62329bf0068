package supervisor

import (
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// reusePort is -mode reuseport: one SO_REUSEPORT socket per slot, and the
// kernel spreads connections over the sockets. The supervisor keeps each
// slot's socket across respawns, so its backlog survives a worker's death;
// while a slot has no worker (it crashed, hung, or was scaled away) the
// supervisor accepts on that socket itself and hands the backlog to the
// other workers over their control channels, keeping a duplicate of each
// worker's end so that those, too, survive its death.
type reusePort struct {
	listen string
	log    *zap.Logger
	bal    balancer.Balancer[*target]
	h      *handoff
	socks  map[int]*portSocket // by slot id, including slots scaled away
	closed bool
}

// portSocket is one slot's socket, and the supervisor's accept loop on it
// while the slot has no ready worker.
type portSocket struct {
	ln     *listener.Socket
	orphan *acceptLoop
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
	bal := balancer.NewRoundRobin[*target]()
	m := &reusePort{log: log, bal: bal, h: newHandoff(bal, log, cfg.QueueMax, cfg.QueueTimeout), socks: map[int]*portSocket{}}
	for i, ln := range socks {
		m.socks[i+1] = &portSocket{ln: ln}
	}
	m.listen = m.addr()
	return m, nil
}

func (m *reusePort) addr() string          { return m.socks[1].ln.Addr().String() }
func (m *reusePort) activated() bool       { return false }
func (m *reusePort) startAccepting() error { return nil }

func (m *reusePort) stopAccepting() {
	m.closed = true
	for _, ps := range m.socks {
		ps.adopt(nil, false)
		ps.ln.Close()
	}
	m.h.flush()
}

// prepare gives the worker its slot's socket, binding one for a slot that
// never had one, and makes the worker's control channel its handoff target.
func (m *reusePort) prepare(sl *slot, ctl *ipc.Channel, ctlRemote *os.File) (handles, error) {
	ps, err := m.socket(sl.id)
	if err != nil {
		return handles{}, err
	}
	f, err := listener.Dup(ps.ln)
	if err != nil {
		return handles{}, err
	}
	t, err := newTarget(sl, ctl, ctlRemote)
	if err != nil {
		f.Close()
		return handles{}, err
	}
	return handles{file: f, t: t}, nil
}

// socket returns slot id's socket, binding a new one into the group for a
// slot added by a scale-up.
func (m *reusePort) socket(id int) (*portSocket, error) {
	if ps, ok := m.socks[id]; ok {
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
	ps := &portSocket{ln: sock}
	m.socks[id] = ps
	return ps, nil
}

// route: the worker takes its own socket's connections again, and may be
// handed another vacant slot's.
func (m *reusePort) route(p *process) {
	m.bal.Add(p.t)
	m.h.flush()
	if ps := m.socks[p.slot.id]; ps != nil {
		ps.adopt(nil, false)
	}
}

func (m *reusePort) unroute(p *process)    { m.bal.Remove(p.t) }
func (m *reusePort) exited(p *process) int { return m.h.recover(p.t) }

// vacant: the supervisor accepts on the slot's socket until a new worker is
// ready, so connections the kernel queued there go to the other workers
// instead of waiting for the respawn.
func (m *reusePort) vacant(sl *slot) {
	if ps := m.socks[sl.id]; ps != nil && !m.closed {
		ps.adopt(m, true)
	}
}

// retire keeps a scaled-away slot's socket open, with the supervisor
// accepting on it and handing its connections to the remaining workers.
// The kernel keeps hashing new connections to every socket of the group,
// and closing one resets whatever is queued on it, so a socket is never
// closed while the supervisor runs: a later scale-up gives it a worker
// again.
func (m *reusePort) retire(sl *slot) { m.vacant(sl) }

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

package supervisor

import (
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// rr is -mode rr (Node's SCHED_RR): the supervisor accepts, and the
// balancer picks the worker each connection is handed to over the
// worker's handoff channel (fd 4). The supervisor keeps a duplicate of the
// worker's end, so that what a dead or drained worker did not take is read
// back and handed on.
//
// A Node.js worker (-worker-protocol node) has no handoff channel: its
// connections go as Node's primary sends them, newconn messages on its IPC
// channel (handoff_node.go), and the supervisor keeps each until the worker
// answers that it took it.
type rr struct {
	ln         *listener.Socket
	activated_ bool
	leastConn  bool
	node       bool // workers are Node.js cluster workers
	bal        balancer.Balancer[*target]
	h          *handoff
	loop       *acceptLoop
}

func newRR(cfg Config, log *zap.Logger, ln *listener.Socket, activated bool) *rr {
	bal, _ := balancer.New[*target](cfg.Balance) // validated with the flags
	return &rr{
		ln: ln, activated_: activated, leastConn: cfg.Balance == "least-conn", bal: bal,
		node: cfg.WorkerProtocol == ProtocolNode,
		h:    newHandoff(bal, log, cfg.QueueMax, cfg.QueueTimeout),
	}
}

func (m *rr) addr() string    { return m.ln.Addr().String() }
func (m *rr) activated() bool { return m.activated_ }

func (m *rr) startAccepting() error {
	loop, err := m.h.accept(m.ln)
	m.loop = loop
	return err
}

func (m *rr) stopAccepting() {
	m.ln.Close()
	m.loop.stop()
	m.h.flush() // queued connections to whoever is still ready
}

// prepare gives the worker the receiving end of a new handoff channel; a
// Node worker, whose connections travel on its IPC channel, gets the
// listening socket instead, for its link to learn the address its
// server reports as its own.
func (m *rr) prepare(sl *slot, _ *ipc.Channel, _ *os.File) (handles, error) {
	if m.node {
		f, err := listener.Dup(m.ln)
		if err != nil {
			return handles{}, err
		}
		return handles{file: f, t: newNodeTarget(sl)}, nil
	}
	local, remote, err := ipc.Pair()
	if err != nil {
		return handles{}, err
	}
	t, err := newTarget(sl, local, remote)
	if err != nil {
		local.Close()
		remote.Close()
		return handles{}, err
	}
	return handles{file: remote, t: t}, nil
}

func (m *rr) route(p *process) {
	m.bal.Add(p.t)
	m.h.flush()
}

func (m *rr) unroute(p *process)    { m.bal.Remove(p.t) }
func (m *rr) exited(p *process) int { return m.h.recover(p.t) }
func (m *rr) vacant(*slot)          {}
func (m *rr) retire(*slot)          {}
func (m *rr) close() int            { return m.h.closeQueue() }
func (m *rr) handoff() *handoff     { return m.h }
func (m *rr) observe(o observer)    { m.h.obs = o }
func (m *rr) loadReports() bool     { return m.leastConn }

func (m *rr) pause(p *process, paused bool) { m.h.pause(p.t, paused) }
func (m *rr) tick()                         { m.h.check(time.Now()) }

// restoreRR takes the listening socket and the pending queue an upgrade
// kept (see upgrade.go).
func restoreRR(cfg Config, log *zap.Logger, st *upgradeState) (*rr, error) {
	socks, err := inheritSockets([]int{st.Listener})
	if err != nil {
		return nil, err
	}
	m := newRR(cfg, log, socks[0], st.Activated)
	m.h.restorePending(st.Pending)
	return m, nil
}

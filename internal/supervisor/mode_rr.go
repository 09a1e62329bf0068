package supervisor

import (
	"context"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

// rr is -mode rr (Node's SCHED_RR): the supervisor accepts, and its
// handoff sends each connection to the worker the balancer picks. A
// prefork worker gets the receiving end of a channel of its own at fd 4,
// and the supervisor keeps a duplicate of it, so that what a dead or
// drained worker did not take is read back and handed on. A Node.js worker
// (-worker-protocol node) is sent its connections as Node's primary sends
// them, newconn messages on its IPC channel, each kept until the worker
// answers that it took it.
type rr struct {
	lns   []listening
	log   *zap.Logger
	h     *handoff.Handoff
	loops []*handoff.AcceptLoop // one per listener while accepting
	past  map[string]uint64     // accepted by the loops stopped (an upgrade that failed), by listener
	// reach makes what a worker of sl gets at fd 4 and its transport.
	reach func(m *rr, sl *slot) (handles, error)
}

func newRR(cfg Config, log *zap.Logger, lns []listening) (*rr, error) {
	h, err := handoff.New(cfg.Balance, log, cfg.QueueMax, cfg.QueueTimeout)
	if err == nil {
		err = stick(h, cfg)
	}
	if err != nil {
		closeListeners(lns, true)
		return nil, err
	}
	m := &rr{lns: lns, log: log, h: h, reach: (*rr).frames}
	if cfg.WorkerProtocol == ProtocolNode {
		m.reach = (*rr).node
	}
	return m, nil
}

func (m *rr) listeners() []listening { return m.lns }

func (m *rr) prepare(sl *slot, _ *ipc.Channel, _ *os.File) (handles, error) { return m.reach(m, sl) }

// frames gives the worker the receiving end of a new handoff channel.
func (m *rr) frames(sl *slot) (handles, error) {
	local, remote, err := ipc.Pair()
	if err != nil {
		return handles{}, err
	}
	t, err := framesTarget(sl, local, remote, false, m.log)
	if err != nil {
		local.Close()
		remote.Close()
		return handles{}, err
	}
	return handles{files: []*os.File{remote}, t: t}, nil
}

// node gives a Node worker, whose connections travel on its IPC channel,
// every listening socket, for its link to learn the addresses its servers
// ask for and report as their own.
func (m *rr) node(sl *slot) (handles, error) {
	files, err := dupAll(m.lns)
	if err != nil {
		return handles{}, err
	}
	return handles{files: files, t: handoff.NewNodeTarget(sl.id)}, nil
}

// startAccepting starts one accept loop per listener; each connection
// carries its listener's index to the worker.
func (m *rr) startAccepting() error {
	for i, l := range m.lns {
		loop, err := m.h.Accept(l.sock, i)
		if err != nil {
			m.stopLoops()
			return err
		}
		m.loops = append(m.loops, loop)
	}
	return nil
}

// accepted is how many connections each listener's loop accepted, by the
// listener's name (the metrics' listener label).
func (m *rr) accepted() map[string]uint64 {
	n := make(map[string]uint64, len(m.lns))
	for i, l := range m.lns {
		n[l.name] = m.past[l.name]
		if i < len(m.loops) {
			n[l.name] += m.loops[i].Accepted()
		}
	}
	return n
}

func (m *rr) stopLoops() {
	for i, l := range m.loops {
		l.Stop()
		if m.past == nil {
			m.past = map[string]uint64{}
		}
		m.past[m.lns[i].name] += l.Accepted()
	}
	m.loops = nil
}

func (m *rr) stopAccepting() {
	closeListeners(m.lns, true)
	m.stopLoops()
	m.h.Flush() // queued connections to whoever is still ready
}

// slot: a slot scaled away takes its sticky keys with it.
func (m *rr) slot(sl *slot, c slotChange) {
	if c == slotRetired {
		m.h.RetireSlot(sl.id)
	}
}
func (m *rr) settle(context.Context)    {}
func (m *rr) handoff() *handoff.Handoff { return m.h }

// save stops the accept loop and moves the pending queue's connections
// into st, with the listening socket; resume undoes both.
func (m *rr) save(st *upgradeState) (func(), error) {
	m.stopLoops()
	st.StoppedAt = time.Now() // the last accept was before this
	pend := m.h.TakeQueue()
	resume := func() {
		m.h.Requeue(pend)
		if err := m.startAccepting(); err != nil {
			m.log.Error("cannot accept again after a failed upgrade", zap.Error(err))
		}
	}
	st.Claims = m.h.Claims()
	for _, p := range pend {
		ps := pendingState{FD: st.keep(p.FD, rolePending, 0)}
		if p.Peer != (ipc.Peer{}) {
			ps.Peer = p.Peer[:]
		}
		st.Pending = append(st.Pending, ps)
	}
	return resume, keepListeners(st, m.lns)
}

// restoreRR takes the listening socket and the pending queue an upgrade
// kept.
func restoreRR(cfg Config, log *zap.Logger, st *upgradeState, kept *keptFDs) (*rr, error) {
	lns, err := restoreListeners(cfg, st, kept)
	if err != nil {
		return nil, err
	}
	m, err := newRR(cfg, log, lns)
	if err != nil {
		return nil, err
	}
	m.h.RestoreClaims(st.Claims)
	m.h.Requeue(pendingOf(st.Pending)) // new arrivals, handed on once workers are routed
	return m, nil
}

// pendingOf is the queue an upgrade kept.
func pendingOf(ps []pendingState) []handoff.Pending {
	pend := make([]handoff.Pending, len(ps))
	for i, p := range ps {
		pend[i].FD = p.FD
		copy(pend[i].Peer[:], p.Peer)
	}
	return pend
}

package supervisor

import (
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/listener"
)

// steer points g's BPF program at every socket but the retired ones, by
// their index in the group. It reports whether the kernel took it; if
// not, the previous program (if any) stays and retired sockets must stay
// open. Called with m.mu held.
func (m *reusePort) steer(g *portGroup) bool {
	var to []int
	for i, ps := range g.order {
		if !ps.retired {
			to = append(to, i)
		}
	}
	if err := listener.Steer(g.order[0].ln, to); err != nil {
		m.log.Warn("cannot steer connections away from retired sockets; they stay open",
			zap.String("listener", m.lns[g.index].name), zap.Error(err))
		return false
	}
	return true
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
	m.adopt(ps, false)
	ps.retired = true
	if !m.steer(ps.g) {
		ps.retired = false
		m.adopt(ps, true)
		return
	}
	m.startRetiring(ps)
}

// startRetiring starts emptying a retired socket. Out of descriptors (it
// needs one), it tries again after the quiet period: the socket gets no new
// connections meanwhile, and what is queued on it waits in its backlog.
// Called with m.mu held.
func (m *reusePort) startRetiring(ps *portSocket) {
	r, err := m.h.Retire(ps.ln, ps.g.index)
	if err != nil {
		m.log.Error("cannot empty a retired socket yet; retrying", m.socketFields(ps, zap.Duration("in", m.quiet), zap.Error(err))...)
		time.AfterFunc(m.quiet, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if ps.retired && ps.emptying == nil && !m.closed && ps.g.socks[ps.id] == ps {
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

// closeRetired takes an emptied socket out of its group and closes it,
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
	g := ps.g
	if err := listener.Unlisten(ps.ln); err != nil {
		m.log.Error("cannot close a retired socket; it stays open", m.socketFields(ps, zap.Error(err))...)
		ps.emptying, ps.retired = nil, false // it is still in the group: steer to it again
		m.steer(g)
		m.adopt(ps, true)
		return
	}
	// The kernel moved the group's last socket into ps's place.
	i := slices.Index(g.order, ps)
	last := len(g.order) - 1
	g.order[i] = g.order[last]
	g.order = g.order[:last]
	delete(g.socks, ps.id)
	ps.emptying = nil
	ps.ln.Close()
	m.steer(g)
}

// socketFields name ps in a log line: its slot and listener.
func (m *reusePort) socketFields(ps *portSocket, more ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.Int("slot", ps.id), zap.String("listener", m.lns[ps.g.index].name)}, more...)
}

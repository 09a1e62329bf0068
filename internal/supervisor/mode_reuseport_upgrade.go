package supervisor

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/listener"
)

// save keeps the mode's sockets in st, listener by listener: a group's
// sockets each under rolePort with the listener's name and its slot, in
// the group's order (also listed in Ports and PortSlots), and a shared
// listener's socket as in shared mode. Only at rest: the state has no
// place for connections the handoff holds (those of a vacant slot's
// socket), nor for a socket being retired.
func (m *reusePort) save(st *upgradeState) (func(), error) {
	none := func() {}
	if n := m.h.Pending(); n > 0 {
		return none, fmt.Errorf("not while %d connections wait for a worker", n)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps := m.unsettled(); ps != nil {
		return none, fmt.Errorf("not while slot %d's socket of listener %q is retiring or vacant", ps.id, m.lns[ps.g.index].name)
	}
	for i, l := range m.lns {
		g := m.groups[i]
		if g == nil {
			if _, err := keepListening(st, l); err != nil {
				return none, err
			}
			continue
		}
		for _, ps := range g.order {
			fd, err := st.keepListener(ps.ln, rolePort, l.name, ps.id)
			if err != nil {
				return none, err
			}
			st.Ports = append(st.Ports, fd)
			st.PortSlots = append(st.PortSlots, ps.id)
		}
		st.Listeners = append(st.Listeners, listenerState{Name: l.name})
	}
	return none, nil
}

// restoreReusePort takes the sockets an upgrade kept, listener by
// listener: a group's in the group's order, or a shared listener's one.
// An older image's state has one listener, a group kept as mainListener.
func restoreReusePort(cfg Config, log *zap.Logger, st *upgradeState, kept *keptFDs) (*reusePort, error) {
	m, err := reusePortMode(cfg, log)
	if err != nil {
		return nil, err
	}
	for _, ls := range restoredListeners(st) {
		name := restoredName(cfg, st, ls)
		socks, ids, err := kept.group(ls.Name)
		if err != nil {
			m.close(false)
			return nil, err
		}
		if len(socks) > 0 {
			m.addGroup(name, socks, ids)
			continue
		}
		l, err := restoreListening(st, kept, ls, name)
		if err != nil {
			m.close(false)
			return nil, err
		}
		m.share(l)
	}
	return m, nil
}

// group takes every socket kept for the reuseport group of the listener
// called name, in the group's order, with their slots: none if it was
// kept as one socket.
func (k *keptFDs) group(name string) ([]*listener.Socket, []int, error) {
	var socks []*listener.Socket
	var ids []int
	for {
		f, ok := k.take(rolePort, name)
		if !ok {
			return socks, ids, nil
		}
		sock, err := keptSocket(f)
		if err != nil {
			closeSockets(socks)
			return nil, nil, err
		}
		socks, ids = append(socks, sock), append(ids, f.Slot)
	}
}

// unsettled is a socket being retired, or a vacant slot's: save refuses
// then. Called with m.mu held.
func (m *reusePort) unsettled() *portSocket {
	var found *portSocket
	m.each(func(ps *portSocket) {
		if found == nil && (ps.retired || ps.emptying != nil || ps.orphan != nil) {
			found = ps
		}
	})
	return found
}

// settling reports whether a socket is being retired, or a slot's socket
// is vacant: save refuses then.
func (m *reusePort) settling() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unsettled() != nil
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

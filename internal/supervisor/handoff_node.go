package supervisor

import (
	"errors"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/nodeipc"
)

// nodeConns is how an rr connection reaches a Node.js worker: as Node's
// primary sends it (round_robin_handle.js), a {act:'newconn', key} message
// on the worker's IPC channel with the descriptor attached. Unlike a
// prefork frame, it is answered: the worker says whether it accepted the
// connection, and until it does the supervisor keeps its own descriptor
// (the nodeipc.Worker holds it), so a worker that closes or dies before
// answering loses nothing. Its fields are guarded by the target's mu.
type nodeConns struct {
	w   *nodeipc.Worker // set once the worker has started
	key string          // its round-robin server's key; "" while it has none
}

// errRefused: the worker did not accept a connection it was handed.
var errRefused = errors.New("supervisor: node worker refused a connection (closing its server, or at maxConnections)")

// errNotListening: the worker has no round-robin server at the moment.
var errNotListening = errors.New("supervisor: node worker has no server to take connections")

// newNodeTarget is a Node worker as the handoff sees it: paused until its
// server asks for the port (nodeListen).
func newNodeTarget(sl *slot) *target {
	t := &target{slot: sl.id, node: &nodeConns{}}
	t.off.Store(offPaused)
	return t
}

// send hands fds to the worker, one newconn each, and returns how many
// went, with the error that stopped the rest. Called with the target's mu
// held.
func (n *nodeConns) send(fds []int) (int, error) {
	if n.w == nil || n.key == "" {
		return 0, errNotListening
	}
	for i, fd := range fds {
		if err := n.w.NewConn(n.key, fd); err != nil {
			return i, err
		}
	}
	return len(fds), nil
}

// nodeAccepts reports whether t's worker may take connections for its
// server key: it has no round-robin server yet, or key is that server.
func (t *target) nodeAccepts(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.node.key == "" || t.node.key == key
}

// nodeListen makes t take connections for w's round-robin server key: the
// worker's listen asked for the supervisor's port and has been answered.
func (h *handoff) nodeListen(t *target, w *nodeipc.Worker, key string) {
	t.mu.Lock()
	t.node.w, t.node.key = w, key
	t.mu.Unlock()
	h.pause(t, false)
}

// nodeClose: the worker closed its round-robin server key (Node's
// act:'close'); it takes no connections until it listens again.
func (h *handoff) nodeClose(t *target, key string) {
	t.mu.Lock()
	ours := t.node.key == key
	if ours {
		t.node.key = ""
	}
	t.mu.Unlock()
	if ours {
		h.pause(t, true)
	}
}

// nodeAnswered counts a Node worker's answer to one newconn: it took the
// connection (fd < 0), or gave fd back to be handed to another worker:
// refused (its server is closing, or at maxConnections), or not answered
// before its channel ended.
func (h *handoff) nodeAnswered(t *target, fd int, refused bool) {
	t.mu.Lock()
	t.queue.taken++
	if fd >= 0 {
		t.queue.reclaimed++
	}
	t.mu.Unlock()
	if fd >= 0 {
		t.returned.Add(1) // it never had it
		h.retried.Add(1)
		if refused {
			// A worker at maxConnections refuses whatever comes: a
			// pause, so that its refusals do not bounce connections at
			// IPC speed.
			h.backOff(t, errRefused)
		} else {
			h.bal.Remove(t) // its channel ended: it takes nothing more
		}
		h.redeliver(t, []int{fd})
	} else {
		// Load is then what the worker has not answered: least-conn
		// picks the shortest queue (Node reports no closed connections).
		t.closed.Add(1)
	}
	if t.off.Load()&offFull != 0 && t.hasRoom() && t.off.And(^uint32(offFull))&offFull != 0 {
		h.flush()
	}
}

// redeliver hands connections that from gave back to another worker if one
// is available, else queues them.
func (h *handoff) redeliver(from *target, fds []int) {
	t, ok := h.bal.Pick()
	if ok && t == from {
		t, ok = h.bal.Pick() // the next one, if there is another
	}
	if !ok {
		t = nil
	}
	h.deliver(t, fds, nil, nil, new([ipc.MaxConnsFrame]byte))
}

// nodeReclaim takes back what an exited Node worker was handed and did not
// answer, and hands it on, returning how many.
func (h *handoff) nodeReclaim(t *target) int {
	h.bal.Remove(t)
	return h.nodeTakeBack(t, (*nodeipc.Worker).Reclaim)
}

// nodeWithdraw takes back what a stalled Node worker was handed and has not
// been written yet (all but the one it has not acknowledged), and hands it
// on, returning how many.
func (h *handoff) nodeWithdraw(t *target) int {
	return h.nodeTakeBack(t, (*nodeipc.Worker).Withdraw)
}

// nodeTakeBack hands on the connections take returns from t's worker.
func (h *handoff) nodeTakeBack(t *target, take func(*nodeipc.Worker) []int) int {
	t.mu.Lock()
	w := t.node.w
	t.mu.Unlock()
	if w == nil {
		return 0
	}
	fds := take(w)
	if len(fds) == 0 {
		return 0
	}
	t.mu.Lock()
	t.queue.taken += uint64(len(fds))
	t.queue.reclaimed += uint64(len(fds))
	t.mu.Unlock()
	t.returned.Add(uint64(len(fds)))
	h.recovered.Add(uint64(len(fds)))
	h.redeliver(t, fds)
	return len(fds)
}

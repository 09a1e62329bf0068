package handoff

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/nodeipc"
)

// maxNodeUntaken is the window of a Node worker. Its channel carries one
// connection at a time, each waiting for the worker's NODE_HANDLE_ACK, and
// the rest wait in the supervisor's send queue, where no other worker can
// take them until the worker has exited: keep that queue short.
const maxNodeUntaken = 16

// maxStickyUntaken is the window of a worker under -sticky socketio. Its
// connections belong to its sessions, and one that finds the window full
// goes to another worker, which answers "Session ID unknown": a burst of
// polling clients must fit. Each is taken as soon as the worker's event
// loop reads it (NODE_HANDLE_ACK), and a stalled worker's are withdrawn
// as any (Check).
const maxStickyUntaken = 1024

// Node is the transport to a Node.js worker, as Node's primary sends a
// connection (round_robin_handle.js): a {act:'newconn', key} message on the
// worker's IPC channel with the descriptor attached. Unlike a frame, it is
// answered: the worker says whether it accepted the connection, and until
// it does the supervisor keeps its own descriptor (the nodeipc.Worker holds
// it), so a worker that closes or dies before answering loses nothing. Its
// fields are guarded by the target's mu.
type Node struct {
	t *Target
	w *nodeipc.Worker // set once the worker's server listens
	// keys are its round-robin servers' keys by listener index ("" for a
	// listener it has none on); empty while it has none.
	keys []string
	// on is the listener index of each descriptor handed and not yet
	// answered, past listener 0, for one given back to go to another
	// worker's server for the same listener.
	on map[int]int
	// sticky: the worker called @socket.io/sticky's setupWorker and
	// listens on nothing; it takes each connection as that module's
	// message (nodeipc.Worker.StickyConn) from the moment it is online.
	sticky bool

	sent      uint64 // connections sent
	answered  uint64 // of those, answered or taken back
	reclaimed uint64 // of those, given back
}

// errRefused: the worker did not accept a connection it was handed.
var errRefused = errors.New("handoff: node worker refused a connection (closing its server, or at maxConnections)")

// errNotListening: the worker has no round-robin server at the moment.
var errNotListening = errors.New("handoff: node worker has no server to take connections")

// NewNodeTarget is a Node worker in slot as the handoff sees it: paused
// until its server asks for the port (Listen).
func NewNodeTarget(slot int) *Target {
	n := &Node{}
	n.t = NewTarget(slot, n)
	n.t.off.Store(offPaused)
	n.t.TakesPeers() // whose records say which listener's server takes each
	return n.t
}

// NodeOf is t's Node transport, nil if t is reached otherwise.
func NodeOf(t *Target) *Node {
	if t == nil {
		return nil
	}
	n, _ := t.tr.(*Node)
	return n
}

func (n *Node) send(c conns) (int, error) {
	if n.w == nil || (len(n.keys) == 0 && !n.sticky) {
		return 0, errNotListening
	}
	for i, fd := range c.fds {
		var err error
		if n.sticky {
			err = n.w.StickyConn(fd)
		} else {
			err = n.newConn(c, i, fd)
		}
		if err != nil {
			if errors.Is(err, nodeipc.ErrClosed) {
				err = fmt.Errorf("%w: %w", ErrGone, err)
			}
			n.sent += uint64(i)
			return i, err
		}
	}
	n.sent += uint64(len(c.fds))
	return len(c.fds), nil
}

// newConn sends c.fds[i], fd, for its listener's server.
func (n *Node) newConn(c conns, i, fd int) error {
	on := 0
	if c.peers != nil {
		p := c.peer(i)
		on = p.Listener()
	}
	if on >= len(n.keys) || n.keys[on] == "" {
		return errNotListening // not (yet) on that listener: another worker
	}
	if on > 0 {
		n.on[fd] = on
	} else if len(n.on) > 0 {
		delete(n.on, fd) // a number reused
	}
	return n.w.NewConn(n.keys[on], fd)
}

func (n *Node) holds() bool { return true } // the nodeipc.Worker holds them until answered
func (n *Node) window() int {
	if n.sticky {
		return maxStickyUntaken
	}
	return maxNodeUntaken
}
func (n *Node) untaken(measure bool) int { return int(n.sent - n.answered) }
func (n *Node) taken() uint64            { return n.answered - n.reclaimed }
func (n *Node) close()                   {}

// receive does nothing: a Node worker hands nothing back.
func (n *Node) receive(func([]int, []ipc.Peer)) {}
func (n *Node) awaitRoom(hasRoom func() bool, ready func(error)) {
	// The worker's answers make room (Answered); the last may have come
	// between the send and the mark.
	if hasRoom() {
		go ready(nil) // the caller may hold the handoff's mu
	}
}

// takeBack takes back what the worker was handed and did not answer: live
// (it stopped reading), what was not written to it yet, all but the one it
// has not acknowledged; that one stays, taken when it resumes or handed on
// when it exits. Otherwise (it exited) everything unanswered.
func (n *Node) takeBack(mu sync.Locker, live bool, give func([]int, []ipc.Peer)) int {
	mu.Lock()
	w := n.w
	mu.Unlock()
	if w == nil {
		return 0
	}
	var fds []int
	if live {
		fds = w.Withdraw()
	} else {
		fds = w.Reclaim()
	}
	if len(fds) == 0 {
		return 0
	}
	mu.Lock()
	n.answered += uint64(len(fds))
	n.reclaimed += uint64(len(fds))
	peers := n.peersOf(fds)
	mu.Unlock()
	give(fds, peers)
	return len(fds)
}

// peersOf is the records that say which listener each of fds came from,
// nil if all came from listener 0; under the target's mu.
func (n *Node) peersOf(fds []int) []ipc.Peer {
	if len(n.on) == 0 {
		return nil
	}
	peers := make([]ipc.Peer, len(fds))
	for i, fd := range fds {
		peers[i].SetListener(n.on[fd])
		delete(n.on, fd)
	}
	return peers
}

// Accepts reports whether the worker may take connections of listener i
// for its server key: it has no round-robin server on it yet, or key is
// that server.
func (n *Node) Accepts(i int, key string) bool {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	return i >= len(n.keys) || n.keys[i] == "" || n.keys[i] == key
}

// Listen makes the worker take connections of listener i for w's
// round-robin server key: its listen asked for that listener's address and
// has been answered.
func (n *Node) Listen(h *Handoff, w *nodeipc.Worker, i int, key string) {
	n.t.mu.Lock()
	n.w = w
	for len(n.keys) <= i {
		n.keys = append(n.keys, "")
	}
	n.keys[i] = key
	if i > 0 && n.on == nil {
		n.on = map[int]int{}
	}
	n.t.mu.Unlock()
	h.Pause(n.t, false)
}

// ListenSticky makes the worker take every connection as
// @socket.io/sticky's setupWorker expects them (-sticky socketio): it is
// online, and such a worker never listens.
func (n *Node) ListenSticky(h *Handoff, w *nodeipc.Worker) {
	n.t.mu.Lock()
	n.w, n.sticky = w, true
	n.t.mu.Unlock()
	h.Pause(n.t, false)
}

// ServerClosed: the worker closed its round-robin server key (Node's
// act:'close'); it takes no connections until it listens again.
func (n *Node) ServerClosed(h *Handoff, key string) {
	n.t.mu.Lock()
	ours, left := false, false
	for i, k := range n.keys {
		if k == key && !n.sticky {
			n.keys[i], ours = "", true
		}
		left = left || n.keys[i] != ""
	}
	if ours && !left {
		n.keys = nil
	}
	n.t.mu.Unlock()
	if ours && !left {
		h.Pause(n.t, true)
	}
}

// Answered counts the worker's answer to one newconn: it took the
// connection (fd < 0), or gave fd back to be handed to another worker:
// refused (its server is closing, or at maxConnections), or not answered
// before its channel ended.
func (n *Node) Answered(h *Handoff, fd int, refused bool) {
	t := n.t
	t.mu.Lock()
	n.answered++
	var peers []ipc.Peer
	if fd >= 0 {
		n.reclaimed++
		peers = n.peersOf([]int{fd})
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
			h.policy.Remove(t) // its channel ended: it takes nothing more
		}
		h.redeliver(t, []int{fd}, peers)
	} else {
		// Load is then what the worker has not answered: least-conn
		// picks the shortest queue (Node reports no closed connections).
		t.closed.Add(1)
	}
	h.roomMade(t)
}

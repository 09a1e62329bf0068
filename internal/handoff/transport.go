package handoff

import (
	"errors"
	"sync"

	"github.com/prefork/prefork/internal/ipc"
)

// Transport is how connections reach one worker and come back from it:
// prefork's frame channel (transport_frames.go) or Node's IPC channel,
// whose every connection is answered (transport_node.go). The handoff
// never asks which one it holds; a third transport is one more file of
// this package.
//
// Methods marked "t.mu held" are called with the target's mu held, which
// orders them with the target's accounting; the others without it.
type Transport interface {
	// send sends the connections of c and returns how many went, with the
	// error that stopped the rest (wrapping ErrFull or ErrGone when that is
	// why). t.mu held.
	send(c conns) (int, error)
	// holds says whether the transport keeps our copy of a connection it
	// sent until the worker answers (it gives it back through the handoff
	// if the worker does not take it); otherwise the handoff closes its
	// copy as soon as it is sent.
	holds() bool
	// window is how many connections may be sent and not yet taken.
	window() int
	// untaken is how many connections were sent and are not taken yet, as
	// last measured, or measured now if measure. t.mu held.
	untaken(measure bool) int
	// taken is how many connections the worker itself has taken (not
	// those given back). t.mu held.
	taken() uint64
	// awaitRoom arranges for ready to be called, on another goroutine,
	// once hasRoom may report true again: ready(nil), or ready(err) if it
	// never will. hasRoom must not block.
	awaitRoom(hasRoom func() bool, ready func(error))
	// takeBack gives back, through give, the connections sent and not
	// taken: live, those a running worker has not been given yet (it
	// stopped taking them); otherwise everything it did not take (it has
	// exited, and after this nothing can be sent to it). It returns how
	// many; mu is the target's, to lock around its accounting.
	takeBack(mu sync.Locker, live bool, give func(fds []int, peers []ipc.Peer)) int
	// receive starts giving, through give, the connections the worker
	// hands back (handback.go), until the transport closes; a transport
	// that cannot carry them does nothing.
	receive(give func(fds []int, peers []ipc.Peer))
	// close releases the transport's descriptors; no send succeeds after
	// it. Closing twice is harmless.
	close()
}

// conns is what one send carries: descriptors, and where their peers'
// addresses are. Passed by value: nothing in it escapes.
type conns struct {
	fds []int
	// peers holds the addresses, nil if unknown or the worker takes none;
	// fds[i]'s is peers[at[i]], or peers[i] if at is nil.
	peers []ipc.Peer
	at    []uint8
	// records is the size of a peer record the worker takes: PeerSize, or
	// RecordSize with the listener's index.
	records int
	frame   *[ipc.MaxConnsFrame]byte // scratch for the frame, if one is built
	back    bool                     // workers handed them back (handback.go)
	// keys are the sticky keys that chose this worker for each fd ("":
	// none), nil if none did: those wait for the worker when it is full
	// (sticky_hold.go) instead of going to another.
	keys []string
}

// peer is the address of c.fds[i].
func (c *conns) peer(i int) ipc.Peer {
	switch {
	case c.peers == nil:
		return ipc.Peer{}
	case c.at != nil:
		return c.peers[c.at[i]]
	}
	return c.peers[i]
}

// Errors a transport's send wraps to say what the failure means.
var (
	// ErrFull: the worker cannot take more until it takes some.
	ErrFull = errors.New("handoff: worker has too many connections untaken")
	// ErrGone: the worker's channel is closed; it takes nothing more.
	ErrGone = errors.New("handoff: worker's channel is closed")
)

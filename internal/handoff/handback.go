package handoff

import (
	"errors"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/ipc"
)

// Connections handed back: a draining worker that uses
// ipc.FeatureHandBack returns its idle keep-alive connections over its
// transport, the other way, and the handoff gives each to another worker
// as it does a new connection, queueing what none can take yet. One that
// is dropped from the queue (full, or no worker ready in time) is closed
// and counted apart: for the client that is what a drain did before, an
// idle keep-alive connection closed.

// Receive starts taking the connections t's worker hands back, until t's
// transport closes (Recover, Target.Close). Call it once the worker says
// it hands back (its ready frame). A transport that cannot carry them
// (Node's, a lent control channel) ignores it; a nil Handoff or Target is
// none.
func (h *Handoff) Receive(t *Target) {
	if h == nil || t == nil {
		return
	}
	t.tr.receive(func(fds []int, peers []ipc.Peer) {
		t.back.Add(uint64(len(fds)))
		h.comeBack(t, fds, peers)
	})
}

// comeBack hands connections a worker handed back to other workers, as
// dispatch does: what none takes waits in the queue.
func (h *Handoff) comeBack(from *Target, fds []int, peers []ipc.Peer) {
	h.handedBack.Add(uint64(len(fds)))
	if h.st != nil {
		// Idle between requests: no key to peek yet. Its slot's new worker
		// (a reload) takes it; else the next request's key decides.
		if t := h.st.successor(from); t != nil {
			h.deliver(t, conns{fds: fds, peers: peers, frame: new([ipc.MaxConnsFrame]byte), back: true})
			return
		}
		h.dispatch(fds, peers, &batch{again: true})
		return
	}
	if h.npend.Load() > 0 {
		h.Flush() // keep order: earlier connections first
	}
	h.deliver(h.pickBack(), conns{fds: fds, peers: peers, frame: new([ipc.MaxConnsFrame]byte), back: true})
}

// receive reads, on a goroutine, the conns frames the worker sends on its
// own channel and gives their connections to give, until the channel
// closes or stopReceiving.
func (f *Frames) receive(give func([]int, []ipc.Peer)) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	if f.lent || f.received != nil {
		return
	}
	// Our end refuses descriptors until told (ipc.Pair): before the
	// goroutine's first read.
	f.ch.TakeConns()
	done := make(chan struct{})
	f.received = done
	go func() {
		defer close(done)
		buf := make([]byte, ipc.MaxFrame)
		var fds []int
		var peers []ipc.Peer
		stopping := false
		for {
			var fr ipc.Frame
			var err error
			if stopping {
				fr, fds, err = f.ch.TryRecv(buf, fds[:0])
			} else {
				fr, fds, err = f.ch.Recv(buf, fds[:0])
			}
			if errors.Is(err, ipc.ErrFDsTruncated) {
				// This process is out of descriptors: the kernel closed
				// what did not fit. Place the ones that came.
				f.log.Warn("connections handed back: out of descriptors", zap.Int("lost", fr.Count()-len(fds)))
				err = nil
			}
			switch {
			case err == nil:
			case isTimeout(err) && !stopping:
				stopping = true // stopReceiving: take what is queued, then end
				continue
			case errors.Is(err, ipc.ErrWouldBlock), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				return
			default:
				// A malformed frame from the worker: its descriptors are
				// closed. Go on.
				f.log.Warn("connections handed back", zap.Error(err))
				continue
			}
			if fr.Type != ipc.TypeConns {
				continue
			}
			peers = peersOf(fr, len(fds), peers[:0])
			give(fds, peers)
		}
	}()
}

// stopReceiving makes the receiving goroutine, if any, take what the worker
// handed back before it exited and end, and waits for it.
func (f *Frames) stopReceiving() {
	f.rmu.Lock()
	done := f.received
	f.rmu.Unlock()
	if done == nil {
		return
	}
	f.ch.SetReadDeadline(time.Unix(1, 0))
	<-done
}

// peersOf appends the first n peer records of fr, a conns frame, to dst;
// nil when it has none.
func peersOf(fr ipc.Frame, n int, dst []ipc.Peer) []ipc.Peer {
	for p := fr.Peers(); len(p) >= ipc.PeerSize && len(dst) < n; p = p[ipc.PeerSize:] {
		dst = append(dst, ipc.Peer(p[:ipc.PeerSize]))
	}
	if len(dst) == 0 {
		return nil
	}
	return dst
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

package handoff

import (
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// AcceptLoop is one goroutine accepting on one listening socket and
// handing every connection off.
type AcceptLoop struct {
	f     *os.File
	index int // the listener's, recorded with each connection's peer
	// accepted counts the connections it accepted (read by Accepted).
	accepted atomic.Uint64
	closing  atomic.Bool
	done     chan struct{}
}

// Accept starts an accept loop on a duplicate of ln, the listener of
// index i in the workers' listener order.
func (h *Handoff) Accept(ln syscall.Conn, i int) (*AcceptLoop, error) {
	f, err := listener.Dup(ln)
	if err != nil {
		return nil, err
	}
	if h.st != nil {
		h.st.deferAccept(f)
	}
	l := &AcceptLoop{f: f, index: i, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if err := h.serve(l); err != nil {
			h.log.Error("accept loop ended", zap.Error(err))
		}
	}()
	return l, nil
}

// Stop closes the loop's socket and waits for the loop to end. The
// listening socket itself stays open while other descriptors refer to it.
// A nil loop is none.
func (l *AcceptLoop) Stop() {
	if l == nil {
		return
	}
	if l.closing.CompareAndSwap(false, true) {
		l.f.Close()
	}
	<-l.done
}

// Accepted is how many connections the loop accepted; 0 for nil. Any
// goroutine.
func (l *AcceptLoop) Accepted() uint64 {
	if l == nil {
		return 0
	}
	return l.accepted.Load()
}

// serve accepts until the loop is stopped, handing every connection off. It
// reads an *os.File duplicate of the listening socket: a net.TCPListener's
// RawConn refuses Read, while an os.File of a non-blocking socket is
// registered with the runtime poller and its RawConn.Read waits for
// readiness, which is what a raw accept4 loop needs.
func (h *Handoff) serve(l *AcceptLoop) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var accepted [maxBatch]int
	var peers [maxBatch]ipc.Peer
	var sa unix.RawSockaddrAny
	scratch := new(batch)
	var aerr error
	backoff := 5 * time.Millisecond
	// acceptSome accepts and dispatches until the backlog is empty (the
	// poller is edge-triggered: EAGAIN, then wait) or an accept fails. It
	// dispatches inside Read, so that the accept after a dispatch is the
	// one that finds the next connection, not an extra EAGAIN: a lone
	// connection costs one accept4 that succeeds and one that fails, as
	// few as an edge-triggered poller allows.
	acceptSome := func(fd uintptr) bool {
		for {
			n, empty := 0, false
		batch:
			for n < len(accepted) {
				nfd, err := listener.Accept4(int(fd), &sa)
				switch err {
				case nil:
					accepted[n] = nfd
					peers[n] = ipc.PeerOf(&sa)
					peers[n].SetListener(l.index)
					n++
				case unix.EAGAIN:
					empty = true
					break batch
				case unix.ECONNABORTED, unix.EINTR:
				default:
					aerr = err
					break batch
				}
			}
			if n > 0 {
				l.accepted.Add(uint64(n))
				backoff = 5 * time.Millisecond
				var t0 time.Time
				if h.obs != nil {
					t0 = time.Now()
				}
				h.dispatch(accepted[:n], peers[:n], scratch)
				if h.obs != nil {
					h.obs.ObserveHandoff(time.Since(t0))
				}
			}
			if aerr != nil {
				return true
			}
			if empty {
				return false // wait until the socket is readable
			}
		}
	}
	for {
		aerr = nil
		err := rc.Read(acceptSome)
		if err != nil {
			if l.closing.Load() {
				return nil
			}
			return err
		}
		if aerr != nil {
			// EMFILE, ENFILE, ENOBUFS: the connection stays in the backlog;
			// back off as net/http does rather than spin.
			h.log.Warn("accept failed; retrying", zap.Error(aerr), zap.Duration("delay", backoff))
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
		}
	}
}

package handoff

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// How a Retiring socket's emptying ends early.
const (
	retireRun    int32 = iota
	RetireRevive       // a scale-up gave the socket a worker again
	RetireStop         // the supervisor stops: take what is queued and end
)

// Retiring empties a listening socket no new connection is steered to (a
// reuseport slot scaled away): it accepts on a duplicate of it, handing the
// connections to the workers, until nothing has arrived for a quiet
// period.
type Retiring struct {
	h       *Handoff
	f       *os.File // registered with the runtime poller: Read waits, deadlines work
	rc      syscall.RawConn
	end     atomic.Int32
	index   int // the listener's (see Accept)
	fds     [maxBatch]int
	peers   [maxBatch]ipc.Peer
	scratch batch
}

// Retire starts emptying ln, the listener of index i; Run does the work.
func (h *Handoff) Retire(ln syscall.Conn, i int) (*Retiring, error) {
	f, err := listener.Dup(ln)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Retiring{h: h, f: f, rc: rc, index: i}, nil
}

// Cancel ends the emptying early, why being RetireRevive or RetireStop; a
// nil Retiring is none.
func (r *Retiring) Cancel(why int32) {
	if r == nil {
		return
	}
	r.end.CompareAndSwap(retireRun, why)
	r.f.SetReadDeadline(time.Unix(1, 0)) // wakes a waiting Read
}

// Run empties the socket until quiet passes without a connection (true),
// or until cancelled (false). Close it after, and after the last Sweep.
func (r *Retiring) Run(quiet time.Duration) bool {
	for {
		r.f.SetReadDeadline(time.Now().Add(quiet))
		// After setting the deadline: a cancel that set its past deadline
		// before this one is seen here.
		switch r.end.Load() {
		case RetireRevive:
			return false
		case RetireStop:
			r.Sweep()
			return false
		}
		n, aerr := 0, error(nil)
		err := r.rc.Read(func(fd uintptr) bool {
			n, aerr = r.accept(int(fd))
			return n > 0 || aerr != nil // false: wait until readable
		})
		if n > 0 {
			r.h.dispatch(r.fds[:n], r.peers[:n], &r.scratch)
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if r.end.Load() == retireRun {
				return true
			}
		case err != nil:
			return false // r.f closed: cannot happen while Run runs
		case aerr != nil:
			// EMFILE and the like: the connection stays queued; back off
			// as the accept loops do.
			r.h.log.Warn("accept on a retired socket failed; retrying")
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Sweep hands off everything queued on the socket now, without waiting.
func (r *Retiring) Sweep() {
	r.rc.Control(func(fd uintptr) {
		for {
			n, _ := r.accept(int(fd))
			if n == 0 {
				return
			}
			r.h.dispatch(r.fds[:n], r.peers[:n], &r.scratch)
		}
	})
}

// Close closes the duplicate the emptying accepted on.
func (r *Retiring) Close() { r.f.Close() }

// accept accepts up to maxBatch connections on the listening socket fd,
// stopping at the first EAGAIN or error other than an aborted connection.
func (r *Retiring) accept(fd int) (int, error) {
	var sa unix.RawSockaddrAny
	n := 0
	for n < len(r.fds) {
		nfd, err := listener.Accept4(fd, &sa)
		switch err {
		case nil:
			r.fds[n] = nfd
			r.peers[n] = ipc.PeerOf(&sa)
			r.peers[n].SetListener(r.index)
			n++
		case unix.ECONNABORTED, unix.EINTR:
		case unix.EAGAIN:
			return n, nil
		default:
			return n, err
		}
	}
	return n, nil
}

package supervisor

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

// retireQuiet is how long a retired reuseport socket must go without a new
// connection before it is closed. Once the group's program steers new SYNs
// elsewhere, what still arrives is what was queued, and handshakes whose
// SYN came before the program changed: those complete within a round trip,
// or, when the SYN-ACK was lost, after its retransmission 1s later (the
// initial RTO). 1.5s covers one such loss.
const retireQuiet = 1500 * time.Millisecond

// How a drain ends early.
const (
	drainRun    int32 = iota
	drainRevive       // a scale-up gave the socket a worker again
	drainStop         // the supervisor stops: take what is queued and end
)

// drain accepts on a retired reuseport socket, through a duplicate of it,
// handing connections to the remaining workers, until nothing has arrived
// for retireQuiet.
type drain struct {
	f       *os.File // registered with the runtime poller: Read waits, deadlines work
	rc      syscall.RawConn
	end     atomic.Int32
	fds     [maxBatch]int
	peers   [maxBatch]ipc.Peer
	scratch batch
}

func newDrain(ln *listener.Socket) (*drain, error) {
	f, err := listener.Dup(ln)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &drain{f: f, rc: rc}, nil
}

// cancel ends the drain early; a nil drain is none.
func (d *drain) cancel(why int32) {
	if d == nil {
		return
	}
	d.end.CompareAndSwap(drainRun, why)
	d.f.SetReadDeadline(time.Unix(1, 0)) // wakes a waiting Read
}

// run drains until quiet passes without a connection (true), or
// until cancelled (false). The caller closes d.f after it, and after the
// last sweep.
func (d *drain) run(h *handoff, quiet time.Duration) bool {
	for {
		d.f.SetReadDeadline(time.Now().Add(quiet))
		// After setting the deadline: a cancel that set its past deadline
		// before this one is seen here.
		switch d.end.Load() {
		case drainRevive:
			return false
		case drainStop:
			d.sweep(h)
			return false
		}
		n, aerr := 0, error(nil)
		err := d.rc.Read(func(fd uintptr) bool {
			n, aerr = d.accept(int(fd))
			return n > 0 || aerr != nil // false: wait until readable
		})
		if n > 0 {
			h.dispatch(d.fds[:n], d.peers[:n], &d.scratch)
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if d.end.Load() == drainRun {
				return true
			}
		case err != nil:
			return false // d.f closed: cannot happen while run runs
		case aerr != nil:
			// EMFILE and the like: the connection stays queued; back off
			// as the accept loops do.
			h.log.Warn("accept on a retired socket failed; retrying")
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// sweep hands off everything queued on the socket now, without waiting.
func (d *drain) sweep(h *handoff) {
	d.rc.Control(func(fd uintptr) {
		for {
			n, _ := d.accept(int(fd))
			if n == 0 {
				return
			}
			h.dispatch(d.fds[:n], d.peers[:n], &d.scratch)
		}
	})
}

// accept accepts up to maxBatch connections on the listening socket fd,
// stopping at the first EAGAIN or error other than an aborted connection.
func (d *drain) accept(fd int) (int, error) {
	var sa unix.RawSockaddrAny
	n := 0
	for n < len(d.fds) {
		nfd, err := listener.Accept4(fd, &sa)
		switch err {
		case nil:
			d.fds[n] = nfd
			d.peers[n] = ipc.PeerOf(&sa)
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

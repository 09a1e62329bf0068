package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// maxUntaken bounds the connections sent to a worker over its frame
// channel and not yet taken by it. The kernel's bound is far looser (see
// sendLog), and a connection waiting in one worker's queue cannot go to an
// idle one.
const maxUntaken = 1024

// Frames is prefork's transport: conns frames with the descriptors
// attached (SCM_RIGHTS) on a SOCK_SEQPACKET channel. Once a frame is sent
// the worker has its own copy of each descriptor, so the handoff closes
// ours. The supervisor keeps a duplicate of the worker's receiving end
// (keep): what the worker did not take stays readable through it, even
// after the worker's death, and takeBack reads it back.
type Frames struct {
	ch   *ipc.Channel // the supervisor's end: frames are sent here
	keep *ipc.Channel // a duplicate of the worker's end; nil: none
	// lent: ch is the worker's control channel (reuseport hands a vacant
	// slot's connections over it), owned by its control link; frames of
	// that link may be queued with ours.
	lent bool
	log  *zap.Logger
	q    sendLog // guarded by the target's mu

	sendmsg func(frame []byte, fds []int) error // nil: ch.Send; tests inject errors

	// The goroutine receiving what the worker hands back on ch
	// (handback.go): received is closed when it ends; nil, none.
	rmu      sync.Mutex
	received chan struct{}
}

// NewFrames is the transport over ch, a channel of the worker's own, with
// keep the duplicate of the worker's end. It takes both.
func NewFrames(ch, keep *ipc.Channel, log *zap.Logger) *Frames {
	return &Frames{ch: ch, keep: keep, log: log}
}

// OverControl is the transport over ctl, the worker's control channel,
// which stays its control link's: the handoff only lends it.
func OverControl(ctl, keep *ipc.Channel, log *zap.Logger) *Frames {
	return &Frames{ch: ctl, keep: keep, lent: true, log: log}
}

// TakesBack reports whether t is reached over a frame channel of the
// worker's own, on which it can hand connections back (a lent control
// channel carries its link's frames).
func TakesBack(t *Target) bool {
	f := FramesOf(t)
	return f != nil && !f.lent
}

// Channels returns the descriptors' channels, for an upgrade to keep:
// own is nil when the channel is lent (the control link keeps it).
func (f *Frames) Channels() (own, keep *ipc.Channel) {
	if f.lent {
		return nil, f.keep
	}
	return f.ch, f.keep
}

func (f *Frames) send(c conns) (int, error) {
	n := len(c.fds)
	frame := ipc.ConnsFrame(n)
	if c.peers != nil {
		size := max(c.records, ipc.PeerSize)
		frame = ipc.AppendConnsRecords(c.frame[:0], n, size)
		for i := range n {
			p := c.peer(i)
			frame = append(frame, p[:size]...)
		}
	}
	var err error
	if f.sendmsg != nil {
		err = f.sendmsg(frame, c.fds)
	} else {
		err = f.ch.Send(frame, c.fds)
	}
	if err != nil {
		return 0, sendErr(err)
	}
	f.q.add(len(frame), n)
	return n, nil
}

// sendErr says what a send error means: full, gone, or (ENOBUFS, ENOMEM,
// ETOOMANYREFS) transient, the worker still there.
func sendErr(err error) error {
	switch {
	case errors.Is(err, ipc.ErrWouldBlock):
		return fmt.Errorf("%w: %w", ErrFull, err)
	case errors.Is(err, ipc.ErrPeerClosed), errors.Is(err, net.ErrClosed), errors.Is(err, unix.EBADF),
		errors.Is(err, unix.EPIPE):
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	return err
}

func (f *Frames) holds() bool { return false }
func (f *Frames) window() int { return maxUntaken }
func (f *Frames) taken() uint64 {
	return f.q.taken - f.q.reclaimed
}

func (f *Frames) untaken(measure bool) int {
	if measure {
		f.measure()
	}
	return f.q.untaken()
}

// measure reads how much of the queue is taken. Called with the target's
// mu held, so that no frame is sent between the ioctl and the arithmetic.
func (f *Frames) measure() {
	if f.keep == nil {
		// Nothing to measure with: count everything taken.
		f.q.taken = f.q.conns
		return
	}
	rc, err := f.keep.SyscallConn()
	if err != nil {
		return
	}
	var queued int
	var qerr error
	if err := rc.Control(func(fd uintptr) { queued, qerr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || qerr != nil {
		return // closed: takeBack takes it from here
	}
	f.q.settle(uint64(queued))
}

// awaitRoom waits on a goroutine until the channel is writable and hasRoom.
// RawConn.Write parks on the runtime poller until the socket is reported
// writable, then calls the function again. Linux reports a unix socket
// writable (and wakes its poller, edge by edge) each time the peer's read
// frees a frame while the sender's buffer is at most a quarter used; so a
// worker that takes frames wakes this waiter, and one that does not costs
// nothing. The first call checks at once: the frames may have been taken
// before the waiter started. It holds a reference on the channel's
// descriptor that Channel.Close waits for while holding the channel's send
// lock, which is why hasRoom must not wait for the target's mu.
func (f *Frames) awaitRoom(hasRoom func() bool, ready func(error)) {
	go func() {
		rc, err := f.ch.SyscallConn()
		if err == nil {
			err = rc.Write(func(fd uintptr) bool { return writable(fd) && hasRoom() })
		}
		ready(err)
	}()
}

// writable polls fd for writability without waiting; an error or a hang-up
// counts as writable, so that the next send finds out.
func writable(fd uintptr) bool {
	p := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	n, err := unix.Poll(p[:], 0)
	return err != nil || n > 0
}

// takeBack reads the frames queued for the worker out through keep and
// gives their connections back. A live worker may read at the same time:
// each frame goes whole to whichever reader takes it first. For an exited
// worker it closes ch first, so that no send can succeed after it.
func (f *Frames) takeBack(mu sync.Locker, live bool, give func([]int, []ipc.Peer)) int {
	if !live {
		f.stopReceiving() // what it handed back before it exited first
		f.ch.Close()
		if f.keep == nil {
			return 0
		}
		defer f.keep.Close()
	}
	buf := make([]byte, ipc.MaxFrame)
	var fds []int
	var peers []ipc.Peer
	n := 0
	// Bounded: the queue holds at most a send buffer's worth of frames
	// (see sendLog), and malformed ones cannot appear (only this process
	// writes to the channel).
	for range 1 << 16 {
		mu.Lock()
		fr, got, err := f.keep.TryRecv(buf, fds[:0])
		if errors.Is(err, ipc.ErrFDsTruncated) {
			// This process is out of descriptors itself: the kernel
			// closed what did not fit. Hand on the ones that came.
			f.log.Warn("reading back queued connections: out of descriptors", zap.Int("lost", fr.Count()-len(got)))
			err = nil
		}
		if err == nil && fr.Type == ipc.TypeConns {
			f.q.reclaimed += uint64(len(got))
		}
		mu.Unlock()
		if err != nil {
			if !errors.Is(err, ipc.ErrWouldBlock) && !errors.Is(err, io.EOF) {
				f.log.Warn("reading back queued connections", zap.Error(err))
			}
			break
		}
		fds = got
		if fr.Type != ipc.TypeConns {
			// A lent control channel carries its link's frames too: give
			// a live worker those back.
			if live {
				if frame, err := ipc.AppendFrame(nil, fr.Type, fr.Payload); err == nil {
					f.ch.Send(frame, nil)
				}
			}
			continue
		}
		// The frame keeps its peer records, if it had them, for the next
		// worker (Decode checked there is one per descriptor).
		// After a truncation, the first ones came.
		peers = peersOf(fr, len(fds), peers[:0])
		n += len(fds)
		give(fds, peers)
	}
	return n
}

func (f *Frames) close() {
	if !f.lent {
		f.ch.Close()
	}
	if f.keep != nil {
		f.keep.Close()
	}
}

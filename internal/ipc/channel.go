package ipc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Channel is one end of a SEQPACKET socketpair.
//
// Send is safe for concurrent use and never blocks. Recv and TryRecv are for
// one reader at a time.
type Channel struct {
	uc *net.UnixConn
	rc syscall.RawConn

	// Send scratch, guarded by mu. sendFn is the method value c.send, made
	// once so that the hot path hands RawConn.Control no new closure.
	mu      sync.Mutex
	sbuf    []byte
	soob    []byte
	serr    error
	sendFn  func(uintptr)
	roob    []byte // Recv and TryRecv scratch
	closeMu sync.Once

	// refuseFDs: this end never receives descriptors (the supervisor's end
	// of a pair: every descriptor travels to the worker).
	refuseFDs bool
}

// Pair makes a socketpair and returns the local end as a Channel and the
// remote end as a file for exec.Cmd.ExtraFiles. The local end is the
// supervisor's: it refuses descriptors, as no frame carries any towards the
// supervisor, so a worker that sends some cannot make it hold them (Recv
// closes them and returns ErrUnexpectedFDs). Both ends are close-on-exec;
// os/exec clears the flag on the child's copy only. The remote file is
// non-blocking and stays so: os.NewFile of a non-blocking descriptor does not
// switch it to blocking mode when os/exec calls Fd.
func Pair() (*Channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ipc: socketpair: %w", err)
	}
	remote := os.NewFile(uintptr(fds[1]), "ipc-remote")
	local, err := NewChannel(os.NewFile(uintptr(fds[0]), "ipc-local"))
	if err != nil {
		remote.Close()
		return nil, nil, err
	}
	local.refuseFDs = true
	return local, remote, nil
}

// TakeConns lets this end, which Pair made to refuse descriptors, receive
// conns frames: the supervisor's end of the handoff channel of a worker
// that hands connections back ([FeatureHandBack]). Call it before the
// first Recv.
func (c *Channel) TakeConns() { c.refuseFDs = false }

// NewChannel takes ownership of f, a SEQPACKET socket, and closes it:
// net.FileConn works on its own duplicate.
func NewChannel(f *os.File) (*Channel, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("ipc: descriptor %d is not a unix socket", f.Fd())
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("ipc: %w", err)
	}
	c := &Channel{
		uc:   uc,
		rc:   rc,
		soob: make([]byte, 0, unix.CmsgSpace(MaxFDs*4)),
		roob: make([]byte, unix.CmsgSpace(MaxFDs*4)),
	}
	c.sendFn = c.send
	return c, nil
}

// Send sends one frame, with fds attached as SCM_RIGHTS if any. It returns
// ErrWouldBlock at once when the peer's queue is full, so one worker that
// stops reading never stalls the caller. The caller still owns fds.
func (c *Channel) Send(frame []byte, fds []int) error {
	c.mu.Lock()
	c.sbuf = frame
	c.soob = appendRights(c.soob[:0], fds)
	err := c.rc.Control(c.sendFn)
	if err == nil {
		err = c.serr
	}
	c.sbuf, c.serr = nil, nil
	c.mu.Unlock()
	return mapSendErr(err)
}

func (c *Channel) send(fd uintptr) {
	// MSG_DONTWAIT: never block, whatever the descriptor's mode.
	// MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE.
	_, c.serr = unix.SendmsgN(int(fd), c.sbuf, c.soob, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
}

// ErrPeerClosed is returned by Send when the other end is gone.
var ErrPeerClosed = errors.New("ipc: peer closed")

func mapSendErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EAGAIN):
		return ErrWouldBlock
	case errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ECONNREFUSED):
		return ErrPeerClosed
	}
	return fmt.Errorf("ipc: send: %w", err)
}

// Recv waits for one frame. buf must hold MaxFrame bytes to receive any frame;
// the descriptors of a conns frame are appended to fds (close-on-exec, as
// Go's ReadMsgUnix asks for MSG_CMSG_CLOEXEC on Linux, so they cannot leak
// into a child spawned meanwhile). Descriptors that come with any other frame,
// or to an end that refuses them (see Pair), are closed and reported as
// ErrUnexpectedFDs. On any error but ErrFDsTruncated, descriptors that
// arrived are closed and fds is returned as passed; on ErrFDsTruncated the
// frame and the descriptors that arrived are returned. A closed peer gives
// io.EOF.
func (c *Channel) Recv(buf []byte, fds []int) (Frame, []int, error) {
	n, oobn, flags, _, err := c.uc.ReadMsgUnix(buf, c.roob)
	if err != nil {
		return Frame{}, fds, err
	}
	return c.finishRecv(buf, n, c.roob[:oobn], flags, fds)
}

// TryRecv is Recv without waiting: ErrWouldBlock when nothing is queued.
// It runs off the hot path (drains, read-backs), so its closure may allocate.
func (c *Channel) TryRecv(buf []byte, fds []int) (Frame, []int, error) {
	var n, oobn, flags int
	var rerr error
	err := c.rc.Control(func(fd uintptr) {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, c.roob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	})
	if err == nil {
		err = rerr
	}
	if errors.Is(err, unix.EAGAIN) {
		return Frame{}, fds, ErrWouldBlock
	}
	if err != nil {
		return Frame{}, fds, fmt.Errorf("ipc: recv: %w", err)
	}
	return c.finishRecv(buf, n, c.roob[:oobn], flags, fds)
}

func (c *Channel) finishRecv(buf []byte, n int, oob []byte, flags int, fds []int) (Frame, []int, error) {
	start := len(fds)
	fds, perr := parseRights(oob, fds)
	fail := func(err error) (Frame, []int, error) {
		closeAll(fds[start:])
		return Frame{}, fds[:start], err
	}
	if perr != nil {
		return fail(perr)
	}
	if flags&unix.MSG_TRUNC != 0 {
		return fail(ErrTruncated)
	}
	if n == 0 {
		// A SEQPACKET read of zero bytes is the peer's close; this
		// protocol never sends empty packets.
		return fail(io.EOF)
	}
	f, err := Decode(buf[:n])
	if err != nil {
		return fail(err)
	}
	got := len(fds) - start
	// MSG_CTRUNC: the sender attached descriptors that the kernel did not
	// install, because this process reached RLIMIT_NOFILE (or more came
	// than roob holds). The kernel has dropped its references to those,
	// so the connections they were are closed, not queued.
	ctrunc := flags&unix.MSG_CTRUNC != 0
	switch {
	case (got > 0 || ctrunc) && (c.refuseFDs || f.Type != TypeConns):
		return fail(ErrUnexpectedFDs)
	case f.Type != TypeConns:
		return f, fds, nil
	case got > f.Count():
		return fail(ErrFDs)
	case ctrunc:
		return f, fds, ErrFDsTruncated
	case got != f.Count():
		return fail(ErrFDs)
	}
	return f, fds, nil
}

// SyscallConn returns the channel's raw connection, to wait for
// writability (RawConn.Write) or to query the socket (RawConn.Control).
func (c *Channel) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// SetReadDeadline sets the deadline for Recv, as net.Conn's does; a past
// deadline wakes a blocked Recv with a timeout error.
func (c *Channel) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// Close closes the channel; closing twice is harmless. It waits for a Send in
// progress, so that once Close returns every Send either completed before it
// (its frame is in the peer's queue) or fails.
func (c *Channel) Close() error {
	var err error
	c.closeMu.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		err = c.uc.Close()
	})
	return err
}

// CloseAll closes every descriptor in fds, ignoring errors.
func CloseAll(fds []int) { closeAll(fds) }

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

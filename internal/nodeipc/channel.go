package nodeipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Handle types, as the "type" of a NODE_HANDLE wrapper names them (Node's
// handleConversion table in lib/internal/child_process.js). The type tells
// the receiver what object to build around the descriptor; the descriptor
// itself is whatever socket it is.
const (
	// HandleNative is a bare libuv handle (a TCP or pipe handle). Node's
	// cluster primary sends both the rr connections and the shared
	// listening socket as net.Native.
	HandleNative = "net.Native"
	// HandleServer becomes a net.Server listening on the descriptor.
	HandleServer = "net.Server"
	// HandleSocket becomes a connected net.Socket.
	HandleSocket = "net.Socket"
	// HandleDgramNative and HandleDgram are the UDP equivalents.
	HandleDgramNative = "dgram.Native"
	HandleDgram       = "dgram.Socket"
)

// MaxLine bounds one JSON line, newline included. Node itself sets no bound;
// cluster messages are a few hundred bytes, and a peer that sends a longer
// line is broken or hostile.
const MaxLine = 4 << 20

// MaxQueued bounds the messages waiting to be written: Send refuses more with
// ErrQueueFull rather than let a worker that stops reading grow the
// supervisor without limit.
const MaxQueued = 4096

// maxRetransmissions is how many times a handle the peer answered with
// NODE_HANDLE_NACK is sent again before it is dropped, as Node's
// MAX_HANDLE_RETRANSMISSIONS.
const maxRetransmissions = 3

var (
	// ErrClosed is returned by Send and Recv once Close was called.
	ErrClosed = errors.New("nodeipc: channel closed")
	// ErrQueueFull is returned by Send when MaxQueued messages wait already.
	ErrQueueFull = errors.New("nodeipc: send queue full")
	// ErrLineTooLong is returned by Recv when a line exceeds MaxLine; the
	// stream cannot be resynchronised, so the channel is done.
	ErrLineTooLong = errors.New("nodeipc: line too long")
	// ErrBadMessage wraps what Recv says of a line that is not a message
	// (not JSON, or a malformed handle wrapper). The line is skipped and
	// the next Recv reads the next one.
	ErrBadMessage = errors.New("nodeipc: bad message")
)

// Channel is one end of a Node IPC channel in "json" serialization mode: a
// SOCK_STREAM unix socket carrying one JSON value per line, with descriptors
// passed as SCM_RIGHTS.
//
// Send is safe for concurrent use and never blocks on the peer: messages go
// to a queue that one goroutine writes, in order. Recv is for one reader at a
// time.
type Channel struct {
	uc  *net.UnixConn
	raw syscall.RawConn // uc's, for writes that must not wait

	mu       sync.Mutex
	queue    []outgoing // in order; the head waits while a handle is in flight
	acks     [][]byte   // ACK/NACK lines, which bypass the queue as in Node
	inflight *outgoing  // the handle sent and not yet acknowledged
	werr     error      // the writer's failure, returned by later Sends
	closed   bool
	writing  bool          // a goroutine is writing (writer.go); the others only queue
	rest     []byte        // what flush left of a line for the writer goroutine
	restFD   int           // the descriptor still to go with rest; -1: none
	wake     chan struct{} // cap 1: the writer goroutine takes over from flush
	done     chan struct{} // closed by Close
	writerWG sync.WaitGroup
	flushers sync.WaitGroup // flush calls under way, which Close waits for
	once     sync.Once

	r reader // Recv's state

	// gaveUp is told the tag of a handle the peer never received: it
	// answered the last retransmission with a NACK too. Set before the
	// first Recv, and called by it.
	gaveUp func(tag int64)
	// delivered is told the tag of a handle the peer acknowledged
	// (NODE_HANDLE_ACK): it has its own copy of the descriptor, and this
	// channel is done with it. Set and called as gaveUp.
	delivered func(tag int64)
}

// outgoing is one queued line and the descriptor that rides on it: a
// duplicate the channel owns and closes once the peer acknowledges it.
type outgoing struct {
	line  []byte
	fd    int   // -1: none
	tries int   // NACKs received for it
	tag   int64 // the Worker's seq for a newconn, which withdraw finds it by; -1: none
	// lent: fd is the caller's, not a duplicate, and never closed here:
	// the Worker lends a newconn's descriptor, which it holds until the
	// worker answers, and so saves a dup and a close per connection.
	lent bool
}

// release closes out's descriptor, unless it was lent.
func (out *outgoing) release() {
	if out.fd >= 0 && !out.lent {
		unix.Close(out.fd)
	}
}

// Pair makes a SOCK_STREAM socketpair, the kind child_process.fork gives a
// Node child. It returns the local end as a Channel and the remote end as a
// file for exec.Cmd.ExtraFiles; the child learns its number from
// NODE_CHANNEL_FD (see Environ). Both ends are close-on-exec; os/exec clears
// the flag on the child's copy only. Close the remote file once the child
// has started.
func Pair() (*Channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("nodeipc: socketpair: %w", err)
	}
	remote := os.NewFile(uintptr(fds[1]), "nodeipc-remote")
	local, err := NewChannel(os.NewFile(uintptr(fds[0]), "nodeipc-local"))
	if err != nil {
		remote.Close()
		return nil, nil, err
	}
	return local, remote, nil
}

// NewChannel takes ownership of f, a connected SOCK_STREAM unix socket, and
// closes it: net.FileConn works on its own duplicate.
func NewChannel(f *os.File) (*Channel, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("nodeipc: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("nodeipc: %s is not a unix socket", f.Name())
	}
	if err := checkStream(uc); err != nil {
		uc.Close()
		return nil, fmt.Errorf("nodeipc: %s: %w", f.Name(), err)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("nodeipc: %w", err)
	}
	c := &Channel{
		uc:     uc,
		raw:    raw,
		restFD: -1,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	c.r.init()
	c.writerWG.Add(1)
	go c.writer()
	return c, nil
}

// checkStream refuses a datagram or seqpacket socket: Node's channel is a
// byte stream, and lines would not survive message boundaries. (The type is
// read through RawConn, not f.Fd, which would switch the shared file
// description back to blocking mode under the poller.)
func checkStream(uc *net.UnixConn) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var typ int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	if typ != unix.SOCK_STREAM {
		return errors.New("not a SOCK_STREAM socket")
	}
	return nil
}

// Send queues msg, marshalled as one JSON line, as Node's process.send does.
// With fd >= 0 the message travels as a handle of type HandleNative (see
// SendHandle). The caller keeps fd: the channel sends a duplicate.
func (c *Channel) Send(msg any, fd int) error {
	return c.SendHandle(msg, fd, HandleNative)
}

// SendHandle queues msg with the descriptor fd (the caller keeps fd), wrapped
// the way Node's ChildProcess._send wraps a message that has a handle:
//
//	{"cmd":"NODE_HANDLE","type":typ,"msg":msg}
//
// The descriptor rides as SCM_RIGHTS on the write that carries the first
// byte of that line. Like Node, the channel has one handle in flight at a
// time: every message queued after it (with or without a handle) waits until
// the peer answers NODE_HANDLE_ACK, which Recv reads. A NODE_HANDLE_NACK
// sends it again, up to three times. With fd < 0, typ is ignored and msg goes
// as is.
func (c *Channel) SendHandle(msg any, fd int, typ string) error {
	return c.send(msg, fd, typ, -1)
}

// send is SendHandle with a tag (>= 0) that withdraw can find the message
// by while it waits in the queue.
func (c *Channel) send(msg any, fd int, typ string, tag int64) error {
	if fd >= 0 {
		msg = handleWrapper{Cmd: cmdHandle, Type: typ, Msg: msg}
	}
	line, err := marshalLine(msg)
	if err != nil {
		return err
	}
	return c.sendLine(line, fd, tag, false)
}

// sendLine queues line, a whole JSON line, with a duplicate of fd (if >= 0)
// and tag (see send); or, lent, with fd itself, which the caller keeps
// open until the peer has answered it or withdraw has returned it.
func (c *Channel) sendLine(line []byte, fd int, tag int64, lent bool) error {
	out := outgoing{line: line, fd: -1, tag: tag}
	var err error
	if lent && fd >= 0 {
		out.fd, out.lent = fd, true
	} else if fd >= 0 {
		// F_DUPFD_CLOEXEC: the duplicate must not leak into a child
		// spawned before the peer acknowledges it.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("nodeipc: dup descriptor %d: %w", fd, err)
		}
		out.fd = dup
	}
	c.mu.Lock()
	err = c.enqueueLocked(out)
	kick := err == nil && c.kickLocked()
	c.mu.Unlock()
	if err != nil {
		out.release()
	}
	if kick {
		c.flush()
	}
	return err
}

func (c *Channel) enqueueLocked(out outgoing) error {
	switch {
	case c.closed:
		return ErrClosed
	case c.werr != nil:
		return c.werr
	case len(c.queue) >= MaxQueued:
		return ErrQueueFull
	}
	c.queue = append(c.queue, out)
	return nil
}

// withdraw takes out of the queue the tagged messages that want picks,
// closing their descriptors, and returns their tags in queue order. What
// is queued has not been written: the writer takes a message out of the
// queue before it writes it, and a handle in flight is not in the queue
// (until a NACK puts it back, unread by the peer).
func (c *Channel) withdraw(want func(tag int64) bool) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var tags []int64
	kept := c.queue[:0]
	for _, out := range c.queue {
		if out.tag < 0 || !want(out.tag) {
			kept = append(kept, out)
			continue
		}
		tags = append(tags, out.tag)
		out.release()
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	return tags
}

// forgetInflight drops the handle in flight if its descriptor was lent:
// its peer is gone, and the lender takes it back.
func (c *Channel) forgetInflight() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil && c.inflight.lent {
		c.inflight = nil
	}
}

type handleWrapper struct {
	Cmd  string `json:"cmd"`
	Type string `json:"type"`
	Msg  any    `json:"msg"`
}

const (
	cmdHandle     = "NODE_HANDLE"
	cmdHandleAck  = "NODE_HANDLE_ACK"
	cmdHandleNack = "NODE_HANDLE_NACK"
)

var (
	ackLine  = []byte(`{"cmd":"NODE_HANDLE_ACK"}` + "\n")
	nackLine = []byte(`{"cmd":"NODE_HANDLE_NACK"}` + "\n")
)

// marshalLine is JSON.stringify(msg) + "\n". encoding/json never writes a
// raw newline (it escapes them in strings and compacts json.RawMessage), so
// the line cannot split.
func marshalLine(msg any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(msg); err != nil { // Encode appends the newline
		return nil, fmt.Errorf("nodeipc: marshal: %w", err)
	}
	if b.Len() > MaxLine {
		return nil, fmt.Errorf("nodeipc: marshal: %d bytes: %w", b.Len(), ErrLineTooLong)
	}
	return b.Bytes(), nil
}

// Close closes the channel and every descriptor still queued or in flight;
// closing twice is harmless. The peer sees EOF.
func (c *Channel) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.done)
		c.mu.Unlock()
		// Closing the socket interrupts a write blocked on a full peer.
		err = c.uc.Close()
		c.writerWG.Wait()
		c.flushers.Wait()
		c.mu.Lock()
		if c.inflight != nil {
			c.inflight.release()
			c.inflight = nil
		}
		for _, out := range c.queue {
			out.release()
		}
		c.queue = nil
		c.mu.Unlock()
		c.r.closeFDs()
	})
	return err
}

// Environ is the environment a Node child needs to find the channel at
// descriptor fd and, with id > 0, to run as cluster worker id (cluster.isWorker
// is true, cluster.worker.id is id). Node reads NODE_UNIQUE_ID only when it
// runs a script file (process.argv[1]), not with -e.
func Environ(fd, id int) []string {
	env := []string{
		"NODE_CHANNEL_FD=" + strconv.Itoa(fd),
		"NODE_CHANNEL_SERIALIZATION_MODE=json",
	}
	if id > 0 {
		env = append(env, "NODE_UNIQUE_ID="+strconv.Itoa(id))
	}
	return env
}

package cluster

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// Handing idle keep-alive connections back (rr mode, when the supervisor
// offers ipc.FeatureHandBack, and only for a server run by [Serve]).
//
// A drain used to close every keep-alive connection idle between requests,
// and a client that sent its next request at that moment got a reset or an
// empty reply: the keep-alive race, which a client retries for a GET but
// not for a POST. Instead the worker hands each such connection back to the
// supervisor over its handoff channel, the other way, and the supervisor
// hands it to another worker: the client's next request is answered there,
// on the same TCP connection. A connection busy with a request finishes it
// first, then goes back.
//
// A connection goes back only if this process has read none of the next
// request: whatever the client sends meanwhile waits in the kernel's
// receive queue for the next worker. net/http does not say what it has
// buffered, so the connection tells from the reads net/http makes on it:
//
//   - Serve's ConnState hook marks it idle when a response is written
//     (StateIdle, or StateNew before the first request) and busy once a
//     request is read (StateActive, which net/http reports for every
//     request it reads, even one read whole from its buffer). Hijacked, it
//     never moves.
//   - Idle, net/http waits for the next request with bufio.Peek on a
//     4096-byte bufio.Reader, whose fill reads into the free end of that
//     buffer: a read of exactly idleReadSize bytes means nothing is
//     buffered. Bytes of a pipelined request read with the last one, or the
//     byte net/http's background read took while the handler ran, make the
//     read shorter; the connection then serves that request and goes back
//     after it.
//   - Nothing was read since the last response (nread == idleAt).
//
// Such a read is where the connection leaves: at once if the drain has
// begun, or when the drain wakes it with a past read deadline (set only on
// a connection blocked in that very read, so net/http never sees it). It
// returns io.EOF, and net/http closes its copy, which does not end the TCP
// connection: the copy in flight to the supervisor holds it open.
//
// TLS connections (the server sees a *tls.Conn, never marked) and hijacked
// ones (WebSocket) never move; they finish or close as before. A
// connection that cannot be sent (the supervisor's queue stays full) is
// closed as before.

// idleReadSize is the length of the read net/http makes for the next
// request when its buffer is empty: bufio's default size.
const idleReadSize = 4096

// States of a connection for hand-back (handedConn.move). The zero value
// never moves: a server that Serve did not wire.
const (
	movePinned uint32 = iota
	moveBusy          // a request is being read or served
	moveIdle          // answered; nothing of the next request read
)

// sendTries bounds how long a hand-back waits for room in the
// supervisor's queue: sendTries polls of sendWait each.
const (
	sendTries = 100
	sendWait  = 10 // milliseconds
)

// handBack is a worker's hand-back: its connections, and the channel they
// go back on.
type handBack struct {
	ch  *ipc.Channel // the handoff channel, the other way
	all atomic.Bool  // draining: every connection leaves when idle

	mu      sync.Mutex
	conns   map[*handedConn]struct{}
	servers map[*http.Server]bool

	moved, failed atomic.Uint64 // handed back; could not be, and closed
}

func newHandBack(ch *ipc.Channel) *handBack {
	return &handBack{ch: ch, conns: map[*handedConn]struct{}{}, servers: map[*http.Server]bool{}}
}

func (b *handBack) add(c *handedConn) {
	b.mu.Lock()
	b.conns[c] = struct{}{}
	b.mu.Unlock()
}

func (b *handBack) remove(c *handedConn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// wire makes srv's connections movable: its ConnState hook, which calls
// srv's own. Call it before
// srv.Serve. A server that speaks HTTP/2 without TLS is left alone: its
// reads are not net/http's HTTP/1 reads.
func (b *handBack) wire(srv *http.Server) {
	if srv.Protocols != nil && srv.Protocols.UnencryptedHTTP2() {
		return
	}
	b.mu.Lock()
	b.servers[srv] = true
	b.mu.Unlock()
	state := srv.ConnState
	srv.ConnState = func(nc net.Conn, s http.ConnState) {
		if c, ok := nc.(*handedConn); ok {
			c.setMove(s)
		}
		if state != nil {
			state(nc, s)
		}
	}
}

// wired reports whether wire made srv's connections movable.
func (b *handBack) wired(srv *http.Server) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.servers[srv]
}

// leaveAll starts the drain's hand-back: every connection leaves at its
// next idle read, and those blocked in one now are woken.
func (b *handBack) leaveAll() {
	b.all.Store(true) // before the wakes: a read that starts after sees it
	b.mu.Lock()
	conns := make([]*handedConn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	for _, c := range conns {
		c.wake()
	}
}

// leaveSome asks up to n connections to go back (the supervisor
// rebalances), and returns how many it asked: first those waiting for
// their next request now, which leave at once, then those busy with one,
// which leave once it is answered, at their next idle read. Pinned ones
// (hijacked) stay, and so do silent ones (not a byte read yet): moved, a
// connection that never sends would start its header timeout again on
// every worker it reached, and an idle flood would never be closed.
func (b *handBack) leaveSome(n int) int {
	b.mu.Lock()
	conns := make([]*handedConn, 0, len(b.conns))
	for c := range b.conns {
		if c.state.Load() != connSilent {
			conns = append(conns, c)
		}
	}
	b.mu.Unlock()
	k := 0
	for _, c := range conns {
		if k < n && c.ask() {
			k++
		}
	}
	for _, c := range conns {
		if k < n && c.askLater() {
			k++
		}
	}
	return k
}

// send hands c back: one conns frame with c's descriptor and peer. It
// waits a bounded time for room in the supervisor's queue.
func (b *handBack) send(c *handedConn) error {
	var buf [ipc.HeaderSize + 1 + ipc.RecordSize]byte
	p := ipc.PeerOfAddr(c.ra)
	size := ipc.PeerSize
	if c.w != nil && c.w.uses&ipc.FeatureListeners != 0 {
		p.SetListener(c.index)
		size = ipc.RecordSize
	}
	frame := append(ipc.AppendConnsRecords(buf[:0], 1, size), p[:size]...)
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		fds := []int{int(fd)}
		for range sendTries {
			if serr = b.ch.Send(frame, fds); !errors.Is(serr, ipc.ErrWouldBlock) {
				return
			}
			b.waitRoom()
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// waitRoom waits up to sendWait for the channel to be writable.
func (b *handBack) waitRoom() {
	rc, err := b.ch.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		p := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		unix.Poll(p[:], sendWait)
	})
}

// setMove follows net/http's connection states (see the top of this file).
// It runs on the connection's serving goroutine (StateNew: on Serve's,
// before that starts).
func (c *handedConn) setMove(s http.ConnState) {
	switch s {
	case http.StateNew, http.StateIdle:
		c.idleAt = c.nread
		c.move.Store(moveIdle)
	case http.StateActive:
		c.move.Store(moveBusy)
	default: // hijacked, closed
		c.move.Store(movePinned)
	}
}

// mayLeave reports whether a read of b is net/http waiting for the next
// request with nothing of it read or buffered.
func (c *handedConn) mayLeave(b []byte) bool {
	return len(b) == idleReadSize && c.move.Load() == moveIdle && c.nread == c.idleAt
}

// readIdle is Read at a point where c may leave (mayLeave): it hands c back
// if the drain asks, now or while the read waits, and reads otherwise.
func (c *handedConn) readIdle(p []byte) (int, error) {
	b := c.w.back
	c.mmu.Lock()
	leave := c.leave || b.all.Load()
	c.waiting = !leave
	c.mmu.Unlock()
	if leave {
		return 0, c.handBack()
	}
	n, err := c.f.Read(p)
	c.mmu.Lock()
	c.waiting = false
	woken := c.woken
	c.woken = false
	timedOut := n == 0 && isTimeout(err)
	if woken && !timedOut {
		// The client's bytes won the race with the wake: put back the
		// deadline the server set, which the wake replaced.
		c.f.SetReadDeadline(c.rd)
	}
	c.mmu.Unlock()
	if woken && timedOut {
		return 0, c.handBack()
	}
	return c.read(n, err)
}

// wake interrupts a read waiting in readIdle, so that it hands c back. A
// connection not waiting there is left alone: it leaves at its next idle
// read.
func (c *handedConn) wake() {
	c.mmu.Lock()
	if c.waiting && !c.woken {
		c.woken = true
		// The runtime poller applies it to this process only.
		c.f.SetReadDeadline(time.Unix(1, 0))
	}
	c.mmu.Unlock()
}

// ask makes c, if it waits in readIdle now, go back: the wake of a drain,
// for this connection alone.
func (c *handedConn) ask() bool {
	c.mmu.Lock()
	defer c.mmu.Unlock()
	if !c.waiting || c.woken {
		return false
	}
	c.leave, c.woken = true, true
	c.f.SetReadDeadline(time.Unix(1, 0))
	return true
}

// askLater makes c, busy with a request (or about to be: its read
// returned and net/http has not said active yet), go back at its next idle
// read.
func (c *handedConn) askLater() bool {
	c.mmu.Lock()
	defer c.mmu.Unlock()
	if c.leave || c.waiting || c.move.Load() == movePinned {
		return false
	}
	c.leave = true
	return true
}

// handBack sends c to the supervisor and returns io.EOF, for net/http to
// close its copy as if the client had gone. If c cannot be sent it is
// closed as before.
func (c *handedConn) handBack() error {
	c.move.Store(movePinned)
	b := c.w.back
	if err := b.send(c); err != nil {
		b.failed.Add(1)
		return io.EOF
	}
	b.moved.Add(1)
	return io.EOF
}

package handoff

import (
	"errors"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/proxyproto"
	"github.com/prefork/prefork/internal/sticky"
)

// maxPeeking bounds the connections whose first bytes are awaited at
// once. Past it a connection goes on without a key (or, if it owes a
// PROXY header, is closed), so that clients that connect and send nothing
// cost a bounded amount.
const maxPeeking = 16384

// peeker waits for connections' first bytes off the accept loop: one
// goroutine on an epoll set, edge-triggered, since a peek leaves the bytes
// in the socket and a level-triggered wait would wake at once again. Each
// connection waits until its PROXY header is read and its key is found,
// or until its deadline; a silent client delays nobody.
type peeker struct {
	h    *Handoff
	s    *stickiness
	epfd int
	evfd int // wakes the wait when the first connection arrives
	wait time.Duration

	mu       sync.Mutex
	conns    map[int]*peeking
	fifo     []*peeking // by deadline: one wait for all, so arrival order
	sleeping bool       // the goroutine waits without a timeout
	started  bool

	buf   [sticky.MaxPeek]byte // the goroutine's
	frame [ipc.MaxConnsFrame]byte
}

// peeking is one connection waiting for its bytes.
type peeking struct {
	fd       int
	peer     ipc.Peer
	deadline time.Time
	proxy    bool // its PROXY header is still to read
	done     bool
}

func newPeeker(h *Handoff, s *stickiness) (*peeker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	wait := time.Duration(0)
	if s.cfg.Key.Peek {
		wait += s.cfg.Wait
	}
	if s.cfg.Proxy {
		wait += s.cfg.ProxyWait
	}
	return &peeker{h: h, s: s, epfd: epfd, evfd: evfd, wait: wait, conns: map[int]*peeking{}}, nil
}

// Outcomes of a step.
type outcome int

const (
	pending  outcome = iota // wait for more bytes
	resolved                // route it (with the key found, if any)
	rejected                // close it: its PROXY header is bad
)

// step reads what c needs from fd now, without waiting: its PROXY header
// (consumed: the worker must not see it), then its key (peeked: the
// worker reads the bytes itself).
func (s *stickiness) step(fd int, peer *ipc.Peer, proxy *bool, buf []byte) (string, outcome) {
	if *proxy {
		n, _, err := unix.Recvfrom(fd, buf[:proxyproto.MaxHeader], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return "", pending
		case err != nil || n == 0:
			return "", rejected // reset, or closed before its header
		}
		hl, src, err := proxyproto.Parse(buf[:n])
		switch {
		case errors.Is(err, proxyproto.ErrIncomplete) && n < proxyproto.MaxHeader:
			return "", pending
		case err != nil:
			return "", rejected
		}
		if m, err := unix.Read(fd, buf[:hl]); err != nil || m != hl {
			return "", rejected
		}
		if src.IsValid() {
			*peer = proxyproto.Peer(src)
		}
		*proxy = false
	}
	k := s.cfg.Key
	if k.Find == nil {
		return "", resolved
	}
	if !k.Peek {
		key, _ := k.Find(nil, *peer)
		return key, resolved
	}
	n, _, err := unix.Recvfrom(fd, buf[:sticky.MaxPeek], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return "", pending
	case err != nil || n == 0:
		return "", resolved // the worker will see the error or the end
	}
	key, more := k.Find(buf[:n], *peer)
	if key == "" && more {
		return "", pending
	}
	return key, resolved
}

// trusted reports whether peer may send a PROXY header.
func (s *stickiness) trusted(peer ipc.Peer) bool {
	if len(s.cfg.Trust) == 0 {
		return true
	}
	a, ok := sticky.PeerIP(peer)
	return ok && s.cfg.Trust.Allows(a)
}

// reject closes fd for its PROXY header and counts it.
func (s *stickiness) reject(fd int) {
	s.proxyRejected.Add(1) // first: a client that sees the close may ask at once
	unix.Close(fd)
}

// add makes the peeker wait for fd's bytes; false if it is full.
func (p *peeker) add(fd int, peer ipc.Peer, proxy bool) bool {
	c := &peeking{fd: fd, peer: peer, proxy: proxy, deadline: time.Now().Add(p.wait)}
	p.mu.Lock()
	if len(p.conns) >= maxPeeking {
		p.mu.Unlock()
		return false
	}
	p.conns[fd] = c
	p.fifo = append(p.fifo, c)
	wake := p.sleeping
	p.sleeping = false
	if !p.started {
		p.started = true
		go p.run()
	}
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.h.log.Warn("cannot wait for a connection's first bytes", zap.Error(err))
		p.mu.Lock()
		delete(p.conns, fd)
		c.done = true
		p.mu.Unlock()
		return false
	}
	if wake {
		unix.Write(p.evfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	return true
}

// count is how many connections wait now.
func (p *peeker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// run waits for bytes and deadlines, for good: the handoff lives as long
// as the supervisor.
func (p *peeker) run() {
	events := make([]unix.EpollEvent, 128)
	for {
		timeout := p.timeout()
		n, err := unix.EpollWait(p.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			p.h.log.Error("peeking for sticky keys failed", zap.Error(err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == p.evfd {
				var b [8]byte
				unix.Read(p.evfd, b[:])
				continue
			}
			p.mu.Lock()
			c := p.conns[int(ev.Fd)]
			p.mu.Unlock()
			if c == nil {
				continue
			}
			key, out := p.s.step(c.fd, &c.peer, &c.proxy, p.buf[:])
			if out == pending && ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				// The client will send nothing more: what it sent is all.
				out = resolved
				if c.proxy {
					out = rejected
				}
			}
			if out != pending {
				p.finish(c, key, out)
			}
		}
		p.expire(time.Now())
	}
}

// timeout is the epoll wait until the oldest deadline, in ms rounded up;
// -1 (none) when nothing waits.
func (p *peeker) timeout() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.fifo) > 0 && p.fifo[0].done {
		p.fifo[0] = nil
		p.fifo = p.fifo[1:]
	}
	if len(p.fifo) == 0 {
		p.fifo = nil
		p.sleeping = true
		return -1
	}
	d := time.Until(p.fifo[0].deadline)
	return int(max(0, (d+time.Millisecond-1)/time.Millisecond))
}

// expire ends the waits past their deadline: a PROXY header that did not
// come closes its connection; a key that did not goes by the balance.
func (p *peeker) expire(now time.Time) {
	for {
		p.mu.Lock()
		if len(p.fifo) == 0 || p.fifo[0].deadline.After(now) {
			p.mu.Unlock()
			return
		}
		c := p.fifo[0]
		p.fifo[0] = nil
		p.fifo = p.fifo[1:]
		p.mu.Unlock()
		if c.done {
			continue
		}
		if !c.proxy {
			p.s.timeouts.Add(1)
		}
		out := resolved
		if c.proxy {
			out = rejected
		}
		p.finish(c, "", out)
	}
}

// finish stops waiting for c and routes or closes it. The epoll entry goes
// first: it lives as long as the open file, which the worker's copy keeps.
func (p *peeker) finish(c *peeking, key string, out outcome) {
	p.mu.Lock()
	delete(p.conns, c.fd)
	c.done = true
	p.mu.Unlock()
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	if out == rejected {
		p.s.reject(c.fd)
		return
	}
	p.h.place(c.fd, c.peer, key, true, &p.frame)
}

// deferAccept asks the kernel to complete a connection on the listening
// socket f only once its first bytes have arrived (TCP_DEFER_ACCEPT, as
// nginx's "deferred"), for up to the peeker's wait: the first peek then
// finds them, at accept, and the connection never waits in the peeker.
// The option is the socket's, shared by every descriptor of it; a value
// already set (-defer-accept) stands; a socket that is not TCP refuses it,
// which costs nothing but the peeker's work.
func (s *stickiness) deferAccept(f *os.File) {
	if s.pk == nil {
		return
	}
	secs := int(max(1, (s.pk.wait+time.Second-1)/time.Second))
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT); err == nil && v == 0 {
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs) // -defer-accept's, if set, stands
			}
		})
	}
}

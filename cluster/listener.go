package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// Listen returns the listener the worker serves on. Under the supervisor
// addr is ignored: the supervisor alone decides the address. Standalone it
// is net.Listen("tcp", addr).
func Listen(addr string) (net.Listener, error) {
	w, err := get()
	if err != nil {
		return nil, err
	}
	if w.ctl == nil {
		return net.Listen("tcp", addr)
	}
	if !w.listened.CompareAndSwap(false, true) {
		return nil, errListenTwice
	}
	return listenAll(w)
}

// errListenTwice: the worker's listening descriptors can be taken once.
var errListenTwice = errors.New("cluster: Listen or ListenNamed already took this worker's listeners: call Listen once, or ListenNamed once per listener")

// listenAll makes the listener that yields the connections of every one
// of the supervisor's listeners, and registers it with run.
func listenAll(w *worker) (*listener, error) {
	l := newListener(w)
	l.addr = fakeAddr(w.listenAddr)
	f := os.NewFile(ipc.ListenFD, "prefork-listen")
	if w.mode == ModeRR {
		ch, err := ipc.NewChannel(f)
		if err != nil {
			return nil, fmt.Errorf("cluster: handoff channel: %w", err)
		}
		l.handoff = ch
		l.buf = make([]byte, ipc.MaxFrame)
		if w.uses&ipc.FeatureHandBack != 0 {
			w.back = newHandBack(ch)
		}
		if a, err := net.ResolveTCPAddr("tcp", w.listenAddr); err == nil && !a.IP.IsUnspecified() && a.IP != nil && w.listeners == nil {
			l.local = a // every connection on a socket bound to one IP has it as local address
		}
	} else {
		a, err := newSocketAcceptor(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cluster: inherited listener: %w", err)
		}
		a.proxy = w.proxy
		l.inner = a
		l.addr, l.local = a.Addr(), a.local
		if err := l.acceptMore(); err != nil {
			a.Close()
			return nil, err
		}
	}
	r := listenReq{l: l, done: make(chan struct{})}
	w.listens <- r
	<-r.done
	return l, nil
}

func newListener(w *worker) *listener {
	return &listener{w: w, closed: make(chan struct{}), stop: make(chan struct{}),
		parked: make(chan struct{}, 1), extra: make(chan *handedConn, 256)}
}

// listener yields connections from the supervisor (rr) or from an inherited
// listening socket (shared, reuseport), and counts them for heartbeats.
type listener struct {
	w       *worker
	addr    net.Addr
	inner   *socketAcceptor   // shared, reuseport
	local   net.Addr          // the local address of every connection, if bound to one IP
	handoff *ipc.Channel      // rr
	buf     []byte            // rr: frame buffer
	pending []int             // rr: descriptors received but not yet returned
	peers   []byte            // rr: their peer records (recSize each), if the frame had them
	recSize int               // rr: ipc.PeerSize, or ipc.RecordSize with the listener's index
	more    []*socketAcceptor // shared, reuseport: the other listeners' sockets (listeners.go)
	fed     chan struct{}     // closed when every feed of more has ended; nil without more
	hold    func()            // ListenNamed's demux: wait before parking until its servers took all (named.go)
	at      time.Time         // rr: when they arrived

	// extra holds connections sent over the control channel (reuseport:
	// another slot's orphaned backlog), fed by the worker's loop, which
	// then wakes an Accept blocked on inner (wake).
	extra chan *handedConn

	mu        sync.Mutex // serialises Accept's use of buf and pending
	closeOnce sync.Once
	closed    chan struct{}

	// A drain stops taking connections (stopTaking closes stop); Accept
	// hands out what already arrived, then parks until Close. parked tells
	// the worker's loop that every connection Accept returned has been
	// taken by the server: an http.Server calls Accept again only after it
	// tracks the previous connection, so Shutdown will wait for it.
	stop   chan struct{}
	parked chan struct{} // capacity 1: Accept never waits for the loop
}

// errExhausted: draining, and nothing more is queued for this worker.
var errExhausted = errors.New("cluster: drained")

// stopTaking stops new connections reaching this listener. Shared and
// reuseport: close this process's copy of the listening socket. rr: wake a
// blocked receive with a past deadline; Accept then takes what is queued
// without waiting and leaves later arrivals to the supervisor, which reads
// them back from the channel once this worker exits. Only the worker's loop
// calls it, once per listener.
func (l *listener) stopTaking() {
	close(l.stop) // before the deadline: the woken Accept must see it
	if l.inner != nil {
		l.inner.Close()
		for _, a := range l.more {
			a.Close()
		}
	} else {
		l.handoff.SetReadDeadline(time.Unix(1, 0))
	}
}

// stopped reports whether stopTaking ran.
func (l *listener) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// park tells the worker's loop that Accept hands out nothing more; the loop
// closes the handoff channel and finishes the drain.
func (l *listener) park() {
	select {
	case l.parked <- struct{}{}:
	default: // already told
	}
}

// parkTaken parks once the demux, if any, saw its servers take every
// connection it routed.
func (l *listener) parkTaken() {
	if l.hold != nil {
		l.hold()
	}
	l.park()
}

// wake interrupts an Accept blocked on the inherited socket, so that it
// takes a connection queued on extra. A past deadline does it; the runtime
// poller applies it to this process only.
func (l *listener) wake() {
	if l.inner != nil {
		l.inner.SetDeadline(time.Unix(1, 0))
	}
}

func (l *listener) Accept() (net.Conn, error) {
	l.w.ready()
	for {
		select {
		case c := <-l.extra:
			return l.took(c), nil
		default:
		}
		c, err := l.next()
		if err == nil {
			return l.took(c), nil
		}
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		if isTimeout(err) && l.inner != nil {
			l.inner.SetDeadline(time.Time{}) // woken by inject
			continue
		}
		if outOfFDs(err) && l.relieve() {
			continue
		}
		if errors.As(err, new(unusable)) {
			// One connection could not be adopted (its client gone): go
			// on to the next, draining or not.
			continue
		}
		if l.stopped() {
			if c := l.lastFed(); c != nil {
				return l.took(c), nil
			}
			// Nothing more will come: block until the application closes
			// the listener, so http.Server.Serve sees its shutdown first.
			l.parkTaken()
			<-l.closed
			return nil, net.ErrClosed
		}
		if errors.Is(err, net.ErrClosed) { // next maps EOF to it
			l.parkTaken()
			<-l.closed
			return nil, net.ErrClosed
		}
		return nil, err
	}
}

// adoptAll appends to dst the connections fds, received on the control
// channel; peers are their records, if the frame had them, each with the
// index of the listener the connection came from when there are several
// (ipc.FeatureListeners), and local(index) is that listener's local
// address, nil if unknown. A connection whose client already left is
// closed and skipped.
func adoptAll(dst []*handedConn, fds []int, peers []byte, size int, local func(index int) net.Addr) []*handedConn {
	now := time.Now()
	for _, fd := range fds {
		index := recordListener(peers, size)
		if c, err := adoptConn(fd, popPeer(&peers, size), local(index)); err == nil {
			c.since, c.index = now, index
			dst = append(dst, c)
		}
	}
	return dst
}

// localOf is the local address of every connection of the listener of
// index (shared, reuseport), if its socket is bound to one address: nil
// to ask the kernel.
func (l *listener) localOf(index int) net.Addr {
	if index == 0 {
		return l.local
	}
	if index-1 < len(l.more) {
		return l.more[index-1].local
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// popPeer takes the first record, of size bytes, off recs and returns its
// address (see peerAddr).
func popPeer(recs *[]byte, size int) net.Addr {
	a := peerAddr(*recs)
	if size > 0 && len(*recs) >= size {
		*recs = (*recs)[size:]
	}
	return a
}

// peerAddr is the address in the peer record at the start of rec: nil when
// the record says unknown or there is none, and adoptConn then asks the
// kernel.
func peerAddr(rec []byte) net.Addr {
	if a := ipc.PeerAddr(rec); a != nil {
		return a
	}
	return nil // not a typed nil in the interface
}

// took counts a connection Accept returns (its Close counts the close),
// and registers it as silent until it sends something.
func (l *listener) took(c *handedConn) net.Conn {
	l.w.accepted.Add(1)
	c.w = l.w
	l.w.silent.add(c)
	if l.w.back != nil {
		l.w.back.add(c)
	}
	return c
}

// outOfFDs reports whether an accept failed for want of descriptors.
func outOfFDs(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
}

// relieve makes room after an accept on the inherited socket ran out of
// descriptors: it sheds up to shedBatch connections silent for shedAfter,
// or else waits until the oldest silent one has been so long. It reports
// false when nothing silent is left: Accept then returns the error, and the
// server backs off and retries.
func (l *listener) relieve() bool {
	now := time.Now()
	n, oldest := l.w.shed(shedBatch, now)
	if n > 0 {
		return true
	}
	if oldest.IsZero() {
		return false
	}
	t := time.NewTimer(oldest.Add(shedAfter).Sub(now))
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.stop:
	case <-l.closed:
	}
	return true
}

func (l *listener) next() (*handedConn, error) {
	if l.inner != nil {
		return l.inner.Accept()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.pending) == 0 {
		var err error
		var f ipc.Frame
		if l.stopped() {
			f, l.pending, err = l.handoff.TryRecv(l.buf, l.pending[:0])
			if errors.Is(err, ipc.ErrWouldBlock) {
				return nil, errExhausted
			}
		} else {
			if !l.w.gate.waitRoom(l.stop, l.closed) {
				continue // stopped or closed: find out above
			}
			f, l.pending, err = l.handoff.Recv(l.buf, l.pending[:0])
		}
		if errors.Is(err, ipc.ErrFDsTruncated) {
			// Out of descriptors: the kernel closed the connections that
			// did not fit. Serve those that did.
			l.w.lose(f.Count() - len(l.pending))
			err = nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil, net.ErrClosed
			}
			if isTimeout(err) {
				if !l.stopped() {
					l.handoff.SetReadDeadline(time.Time{})
				}
				continue // draining: take what is queued without waiting
			}
			// A malformed frame: its descriptors are closed; go on.
			fmt.Fprintf(os.Stderr, "cluster: handoff: %v\n", err)
			continue
		}
		if f.Type != ipc.TypeConns {
			continue
		}
		l.peers = f.Peers() // aliases buf, which the next Recv reuses only once pending is empty
		l.recSize = f.RecordSize()
		l.at = time.Now()
		// Ask for a pause before Accept returns any of these, and so
		// before this receives another frame.
		l.w.gate.update(len(l.pending))
	}
	fd := l.pending[0]
	l.pending = l.pending[1:]
	index := recordListener(l.peers, l.recSize)
	c, err := adoptConn(fd, popPeer(&l.peers, l.recSize), l.local)
	if err != nil {
		// Not a socket we can use, or its client already left. Count it
		// as accepted and closed: the supervisor counted it as handed.
		l.w.accepted.Add(1)
		l.w.closed.Add(1)
		l.w.kickLoad()
		return nil, unusable{err}
	}
	c.since = l.at
	l.w.name(c, index)
	return c, nil
}

// tempErr is an accept error the server should back off from and retry
// (EMFILE and the like). http.Server retries an error only if it is a
// net.Error whose Temporary is true, so it needs Timeout too: without it,
// running out of descriptors ended Serve and the worker with it.
type tempErr struct{ error }

func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }
func (e tempErr) Unwrap() error { return e.error }

// unusable: one accepted connection could not be adopted and is closed;
// Accept goes on to the next.
type unusable struct{ error }

func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		if l.inner != nil {
			l.inner.Close()
		}
		if l.handoff != nil {
			l.handoff.Close()
		}
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

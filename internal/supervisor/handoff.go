package supervisor

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// maxBatch bounds the connections accepted per wake-up and so the
// descriptors sent in one frame.
const maxBatch = ipc.MaxFDs

// handoff moves accepted connections to workers: it runs the accept loops
// in rr mode, asks the balancer for a worker, sends the descriptor over that
// worker's handoff channel and closes its own copy. A connection no worker
// takes waits in a bounded queue until one is ready; one whose worker died
// is read back and offered to another. It is safe for concurrent use: accept
// loops and the supervisor's owner goroutine call it.
type handoff struct {
	bal          balancer.Balancer[*target]
	log          *zap.Logger
	queueMax     int
	queueTimeout time.Duration

	// oneCPU: this process and its workers may use one CPU only. A burst
	// of connections accepted together then goes whole to one worker:
	// dividing it would wake several workers that can only take turns on
	// that CPU, for nothing but context switches (in the pinned benchmark,
	// 13,000 switches a second fell to 7,500 and throughput rose 7%). With
	// one CPU, which worker serves a connection does not change how soon it
	// is served. With more, every connection is picked on its own, so a
	// burst spreads over workers that run in parallel.
	oneCPU bool

	mu      sync.Mutex
	pending []pendingConn
	timer   *time.Timer // the next flush: expiry, or a retry (see rearm)
	npend   atomic.Int32

	obs observer // metrics; nil for none. Set before the first accept.

	failures  atomic.Uint64 // sends that failed
	retried   atomic.Uint64 // handoffs that failed and went to another worker
	dropped   atomic.Uint64 // connections closed unserved: queue full or too old
	recovered atomic.Uint64 // connections read back from a dead worker's queue
}

// observer receives timings from the handoff path; it must not allocate.
type observer interface {
	ObserveHandoff(time.Duration)
	ObservePendingWait(time.Duration)
}

type pendingConn struct {
	fd    int
	since time.Time
}

func newHandoff(bal balancer.Balancer[*target], log *zap.Logger, queueMax int, queueTimeout time.Duration) *handoff {
	return &handoff{bal: bal, log: log, queueMax: queueMax, queueTimeout: queueTimeout, oneCPU: runtime.NumCPU() == 1}
}

// acceptLoop is one goroutine accepting on one listening socket.
type acceptLoop struct {
	f       *os.File
	closing atomic.Bool
	done    chan struct{}
}

// accept starts an accept loop on a duplicate of ln.
func (h *handoff) accept(ln syscall.Conn) (*acceptLoop, error) {
	f, err := listener.Dup(ln)
	if err != nil {
		return nil, err
	}
	l := &acceptLoop{f: f, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if err := h.serve(l); err != nil {
			h.log.Error("accept loop ended", zap.Error(err))
		}
	}()
	return l, nil
}

// stop closes the loop's socket and waits for the loop to end. The
// listening socket itself stays open while other descriptors refer to it.
func (l *acceptLoop) stop() {
	if l == nil {
		return
	}
	if l.closing.CompareAndSwap(false, true) {
		l.f.Close()
	}
	<-l.done
}

// serve accepts until the loop is stopped, handing every connection off. It
// reads an *os.File duplicate of the listening socket: a net.TCPListener's
// RawConn refuses Read, while an os.File of a non-blocking socket is
// registered with the runtime poller and its RawConn.Read waits for
// readiness, which is what a raw accept4 loop needs.
func (h *handoff) serve(l *acceptLoop) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var accepted [maxBatch]int
	var peers [maxBatch]ipc.Peer
	var sa unix.RawSockaddrAny
	scratch := new(batch)
	n := 0
	var aerr error
	acceptSome := func(fd uintptr) bool {
		for n < len(accepted) {
			nfd, err := listener.Accept4(int(fd), &sa)
			switch err {
			case nil:
				accepted[n] = nfd
				peers[n] = ipc.PeerOf(&sa)
				n++
			case unix.EAGAIN:
				return n > 0 // false: wait until the socket is readable
			case unix.ECONNABORTED, unix.EINTR:
			default:
				aerr = err
				return true
			}
		}
		return true
	}
	backoff := 5 * time.Millisecond
	for {
		n, aerr = 0, nil
		err := rc.Read(acceptSome)
		if n > 0 {
			var t0 time.Time
			if h.obs != nil {
				t0 = time.Now()
			}
			h.dispatch(accepted[:n], peers[:n], scratch)
			if h.obs != nil {
				h.obs.ObserveHandoff(time.Since(t0))
			}
		}
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
			continue
		}
		backoff = 5 * time.Millisecond
	}
}

// batch groups the connections of one dispatch by worker, so that those
// picked for the same worker travel in one frame. Each accept loop owns one;
// it is too large to build on every call.
type batch struct {
	groups [maxBatch]struct {
		t   *target
		fds [maxBatch]int
		at  [maxBatch]uint8 // where each is in the burst, for its peer
		n   int
	}
	frame [ipc.MaxConnsFrame]byte
}

// dispatch hands off a batch of accepted descriptors. It closes every
// descriptor it is given (after sending it, or after giving up on it) or
// queues it. peers are their addresses, or nil; workers that take them get
// them in the frame. b is the caller's scratch space.
func (h *handoff) dispatch(fds []int, peers []ipc.Peer, b *batch) {
	if h.npend.Load() > 0 {
		h.flush() // keep order: earlier connections first
	}
	var t *target
	ok := false
	ng := 0
	for k, fd := range fds {
		if k == 0 || !h.oneCPU {
			t, ok = h.bal.Pick()
		}
		if !ok {
			h.enqueue(fd)
			continue
		}
		i := 0
		for i < ng && b.groups[i].t != t {
			i++
		}
		if i == ng {
			b.groups[i].t, b.groups[i].n = t, 0
			ng++
		}
		g := &b.groups[i]
		g.fds[g.n] = fd
		g.at[g.n] = uint8(k)
		g.n++
	}
	for i := range ng {
		g := &b.groups[i]
		sent := g.fds[:g.n]
		frame := ipc.ConnsFrame(len(sent))
		if peers != nil && g.t.peers.Load() {
			frame = ipc.AppendConnsPeers(b.frame[:0], g.n)
			for _, k := range g.at[:g.n] {
				frame = append(frame, peers[k][:]...)
			}
		}
		err := g.t.ch.Send(frame, sent)
		if err == nil {
			h.sent(g.t, sent)
		} else {
			h.failed(g.t, err)
			for _, fd := range sent {
				h.one(fd, g.t)
			}
		}
		g.t = nil // do not keep an exited worker's target alive
	}
}

// one hands off a single descriptor, avoiding the worker that just failed,
// and queues it if no worker takes it.
func (h *handoff) one(fd int, failed *target) {
	h.retried.Add(1)
	if !h.sendAny(fd, failed) {
		h.enqueue(fd)
	}
}

func (h *handoff) sent(t *target, fds []int) {
	t.handed.Add(uint64(len(fds)))
	// The worker has its own copy now; without closing ours the client
	// would never see FIN when the worker closes.
	ipc.CloseAll(fds)
}

func (h *handoff) failed(t *target, err error) {
	h.failures.Add(1)
	if !errors.Is(err, ipc.ErrWouldBlock) {
		// Gone or closed: no later pick should choose it. The owner
		// goroutine removes it too when it learns of the exit; Remove is
		// idempotent.
		h.bal.Remove(t)
	}
}

// enqueue holds fd until a worker is ready, within the queue's bounds.
func (h *handoff) enqueue(fd int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) >= h.queueMax {
		h.drop(fd, "no worker ready and queue full")
		return
	}
	now := time.Now()
	h.pending = append(h.pending, pendingConn{fd: fd, since: now})
	h.npend.Store(int32(len(h.pending)))
	h.rearm(now)
}

// drop closes a connection no worker will take and counts it. It logs at
// powers of two of the total, so that a full queue expiring at once is a
// few lines, not thousands.
func (h *handoff) drop(fd int, why string) {
	unix.Close(fd)
	if n := h.dropped.Add(1); n&(n-1) == 0 {
		h.log.Warn("connection closed unserved: "+why, zap.Int("queue_max", h.queueMax),
			zap.Duration("queue_timeout", h.queueTimeout), zap.Uint64("dropped_total", n))
	}
}

// retryEvery is how soon queued connections are offered again while
// workers exist but all their queues are full (the kernel bounds a
// SEQPACKET queue by net.unix.max_dgram_qlen frames, 10 by default).
const retryEvery = 2 * time.Millisecond

// rearm sets the one timer that flushes the queue: when its oldest
// connection expires, or within retryEvery if a worker is ready (then the
// connections wait only because every ready worker's queue was full, and
// must not wait for the next accept). Called with h.mu held.
func (h *handoff) rearm(now time.Time) {
	if len(h.pending) == 0 {
		if h.timer != nil {
			h.timer.Stop()
		}
		return
	}
	d := h.queueTimeout - now.Sub(h.pending[0].since)
	if h.bal.Len() > 0 {
		d = min(d, retryEvery)
	}
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.flush)
		return
	}
	h.timer.Reset(d)
}

// flush hands queued connections to ready workers and closes those that
// waited longer than the queue timeout. The owner calls it when a worker
// becomes ready; a timer calls it to expire old ones.
func (h *handoff) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	keep := h.pending[:0]
	for _, p := range h.pending {
		if now.Sub(p.since) >= h.queueTimeout {
			h.drop(p.fd, "waited too long for a ready worker")
			continue
		}
		if !h.sendAny(p.fd, nil) {
			keep = append(keep, p)
		} else if h.obs != nil {
			h.obs.ObservePendingWait(now.Sub(p.since))
		}
	}
	clear(h.pending[len(keep):])
	h.pending = keep
	h.npend.Store(int32(len(keep)))
	h.rearm(now)
}

// sendAny tries every ready worker but avoid once for fd.
func (h *handoff) sendAny(fd int, avoid *target) bool {
	var buf [8]*target
	tried := buf[:0]
	if avoid != nil {
		tried = append(tried, avoid)
	}
	fds := [1]int{fd}
	for {
		t, ok := h.bal.PickExcluding(tried)
		if !ok {
			return false
		}
		err := t.ch.Send(ipc.ConnsFrame(1), fds[:])
		if err == nil {
			h.sent(t, fds[:])
			return true
		}
		h.failed(t, err)
		tried = append(tried, t)
	}
}

// recover reads back the connections still queued in a dead or drained
// worker's handoff channel and hands them to other workers, returning how
// many. Call it after the worker has exited.
func (h *handoff) recover(t *target) int {
	h.bal.Remove(t)
	t.ch.Close() // after this no Send to t can succeed
	defer t.keep.Close()
	buf := make([]byte, ipc.MaxFrame)
	scratch := new(batch)
	var fds []int
	var peers []ipc.Peer
	n := 0
	// Bounded: the queue holds at most max_dgram_qlen frames, and malformed
	// ones cannot appear (only this process writes to the channel).
	for range 1 << 16 {
		f, got, err := t.keep.TryRecv(buf, fds[:0])
		if err != nil {
			if !errors.Is(err, ipc.ErrWouldBlock) && !errors.Is(err, io.EOF) {
				h.log.Warn("reading back queued connections", zap.Int("slot", t.slot), zap.Error(err))
			}
			break
		}
		fds = got
		// The frame keeps its peer records, if it had them, for the next
		// worker (Decode checked there is one per descriptor).
		peers = peers[:0]
		for p := f.Peers(); len(p) >= ipc.PeerSize; p = p[ipc.PeerSize:] {
			peers = append(peers, ipc.Peer(p[:ipc.PeerSize]))
		}
		if len(peers) == 0 {
			peers = nil
		}
		n += len(fds)
		h.recovered.Add(uint64(len(fds)))
		h.dispatch(fds, peers, scratch)
	}
	return n
}

// closeQueue closes every queued connection (at stop, when no worker is left
// to take them).
func (h *handoff) closeQueue() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.pending)
	for _, p := range h.pending {
		unix.Close(p.fd)
	}
	h.pending = nil
	h.npend.Store(0)
	if h.timer != nil {
		h.timer.Stop()
	}
	return n
}

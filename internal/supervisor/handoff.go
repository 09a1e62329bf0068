package supervisor

import (
	"errors"
	"io"
	"net"
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
	"github.com/prefork/prefork/internal/nodeipc"
)

// maxBatch bounds the connections accepted per wake-up and so the
// descriptors sent in one frame.
const maxBatch = ipc.MaxFDs

// handoff moves accepted connections to workers: it runs the accept loops
// in rr mode, asks the balancer for a worker, sends the descriptor over that
// worker's handoff channel and closes its own copy (a Node worker's, once
// the worker answers: handoff_node.go). A connection no worker
// takes waits in a bounded queue until one is ready; one whose worker died
// or stopped taking connections is read back and offered to another. It is
// safe for concurrent use: accept loops, waiters and timers of its own, and
// the supervisor's owner goroutine call it.
//
// A worker is picked only while it is routed (a balancer member: the
// owner's route and unroute) and available (target.off is zero): not full,
// not backing off after a transient error, not stalled, not paused.
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
	pending []pendingConn // in arrival order
	timer   *time.Timer   // expires the oldest queued connection
	npend   atomic.Int32
	// flush's scratch, guarded by mu.
	ffds   [maxBatch]int
	fpeers [maxBatch]ipc.Peer
	fframe [ipc.MaxConnsFrame]byte

	// sendmsg sends a frame to t; nil for t.ch.Send. Tests inject errors.
	sendmsg func(t *target, frame []byte, fds []int) error

	obs observer // metrics; nil for none. Set before the first accept.

	failures  atomic.Uint64 // sends that failed
	retried   atomic.Uint64 // handoffs that failed and went to another worker
	dropped   atomic.Uint64 // connections closed unserved: queue full or too old
	recovered atomic.Uint64 // connections read back from a dead or stalled worker's queue
}

// observer receives timings from the handoff path; it must not allocate.
type observer interface {
	ObserveHandoff(time.Duration)
	ObservePendingWait(time.Duration)
}

type pendingConn struct {
	fd    int
	since time.Time
	peer  ipc.Peer // zero: unknown, the worker asks the kernel
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
		t   *target // nil: no worker available
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
	ng := 0
	for k, fd := range fds {
		if k == 0 || !h.oneCPU {
			t, _ = h.bal.Pick()
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
		h.deliver(g.t, g.fds[:g.n], g.at[:g.n], peers, &b.frame)
		g.t = nil // do not keep an exited worker's target alive
	}
}

// deliver sends fds to t or, for those t does not take, to other workers,
// and queues what no worker takes. The peer of fds[i] is peers[at[i]], or
// peers[i] if at is nil; peers may be nil.
func (h *handoff) deliver(t *target, fds []int, at []uint8, peers []ipc.Peer, frame *[ipc.MaxConnsFrame]byte) {
	// Every failure makes its target unavailable, so each try is another
	// worker; the bound holds if others clear their marks meanwhile.
	for tries := 0; t != nil && tries <= h.bal.Len(); tries++ {
		n, err := h.send(t, fds, at, peers, frame)
		if n > 0 {
			h.sent(t, fds[:n])
			fds = fds[n:]
			if at != nil {
				at = at[n:]
			} else if peers != nil {
				peers = peers[n:]
			}
		}
		if len(fds) == 0 {
			return
		}
		h.failed(t, err)
		h.retried.Add(uint64(len(fds)))
		t, _ = h.bal.Pick()
	}
	h.enqueue(fds, at, peers)
}

// peerAt is the peer of the i-th of a group's connections (see deliver).
func peerAt(peers []ipc.Peer, at []uint8, i int) ipc.Peer {
	switch {
	case peers == nil:
		return ipc.Peer{}
	case at != nil:
		return peers[at[i]]
	}
	return peers[i]
}

// errFull: the worker has maxUntaken connections it has not taken yet.
var errFull = errors.New("supervisor: worker has too many connections untaken")

// send sends as many of fds to t in one frame (a Node worker: one message
// each) as t has room for, and returns how many it sent: all of them, or
// fewer with the error that stopped the rest. The caller closes what was
// sent (sent).
func (h *handoff) send(t *target, fds []int, at []uint8, peers []ipc.Peer, frame *[ipc.MaxConnsFrame]byte) (int, error) {
	t.mu.Lock()
	n := t.room(len(fds))
	if n == 0 {
		t.mu.Unlock()
		return 0, errFull
	}
	var err error
	if t.node != nil {
		var m int
		m, err = t.node.send(fds[:n])
		t.queue.add(0, m)
		if err != nil {
			t.mu.Unlock()
			return m, err
		}
	} else {
		f := ipc.ConnsFrame(n)
		if peers != nil && t.peers.Load() {
			f = ipc.AppendConnsPeers(frame[:0], n)
			for i := range n {
				p := peerAt(peers, at, i)
				f = append(f, p[:]...)
			}
		}
		if h.sendmsg != nil {
			err = h.sendmsg(t, f, fds[:n])
		} else {
			err = t.ch.Send(f, fds[:n])
		}
		if err == nil {
			t.queue.add(len(f), n)
		}
	}
	t.mu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case n < len(fds):
		return n, errFull
	}
	if t.fails.Load() != 0 {
		t.fails.Store(0)
	}
	return n, nil
}

func (h *handoff) sent(t *target, fds []int) {
	t.handed.Add(uint64(len(fds)))
	if t.node != nil {
		return // the nodeipc.Worker holds them until the worker answers
	}
	// The worker has its own copy now; without closing ours the client
	// would never see FIN when the worker closes.
	ipc.CloseAll(fds)
}

// failed takes t out of rotation for as long as err says: for good if its
// channel is closed, until it has room if it is full, for a short back-off
// otherwise (ENOBUFS, ENOMEM, ETOOMANYREFS pass; the worker is still there).
func (h *handoff) failed(t *target, err error) {
	h.failures.Add(1)
	switch {
	case errors.Is(err, ipc.ErrWouldBlock), errors.Is(err, errFull):
		h.block(t)
	case errors.Is(err, ipc.ErrPeerClosed), errors.Is(err, net.ErrClosed), errors.Is(err, unix.EBADF),
		errors.Is(err, nodeipc.ErrClosed), errors.Is(err, unix.EPIPE):
		// Gone or closed: no later pick should choose it. The owner
		// goroutine removes it too when it learns of the exit; Remove is
		// idempotent.
		h.bal.Remove(t)
	default:
		h.backOff(t, err)
	}
}

// block marks t full and waits, on a goroutine, until it can take
// connections again; then it offers it the queue.
func (h *handoff) block(t *target) {
	if t.off.Or(offFull)&offFull != 0 {
		return // a waiter is on it
	}
	if t.node != nil {
		// The worker's answers clear it (nodeAnswered); the last may have
		// come between the send and the mark.
		if t.hasRoom() && t.off.And(^uint32(offFull))&offFull != 0 {
			go h.flush() // the caller may hold h.mu
		}
		return
	}
	go func() {
		rc, err := t.ch.SyscallConn()
		if err == nil {
			// RawConn.Write parks on the runtime poller until the socket
			// is reported writable, then calls the function again. Linux
			// reports a unix socket writable (and wakes its poller, edge
			// by edge) each time the peer's read frees a frame while the
			// sender's buffer is at most a quarter used; so a worker that
			// takes frames wakes this waiter, and one that does not costs
			// nothing. The first call checks at once: the frames may have
			// been taken before the waiter started.
			err = rc.Write(func(fd uintptr) bool { return writable(fd) && t.hasRoom() })
		}
		t.off.And(^uint32(offFull))
		if err == nil {
			h.flush()
		}
	}()
}

// writable polls fd for writability without waiting; an error or a hang-up
// counts as writable, so that the next send finds out.
func writable(fd uintptr) bool {
	p := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	n, err := unix.Poll(p[:], 0)
	return err != nil || n > 0
}

// hasRoom reports whether t may take a connection. It runs inside
// RawConn.Write, which holds a reference on the channel's descriptor that
// Channel.Close waits for while holding the channel's send lock: waiting
// for t.mu here, held by a sender waiting for that lock, would deadlock. So
// a busy t.mu counts as room, and the flush finds out.
func (t *target) hasRoom() bool {
	if !t.mu.TryLock() {
		return true
	}
	defer t.mu.Unlock()
	return t.room(1) > 0
}

// Back-off after a transient send error: it doubles from backoffMin while
// the errors continue, up to backoffMax.
const (
	backoffMin = 5 * time.Millisecond
	backoffMax = time.Second
)

// backOff takes t out of rotation for a moment after a transient error.
func (h *handoff) backOff(t *target, err error) {
	n := t.fails.Add(1)
	if t.off.Or(offBackoff)&offBackoff != 0 {
		return // a timer is on it
	}
	d := min(backoffMin<<min(n-1, 10), backoffMax)
	if n&(n-1) == 0 {
		h.log.Warn("handoff to a worker failed; retrying it after a back-off", zap.Int("slot", t.slot), zap.Error(err),
			zap.Duration("delay", d), zap.Int32("failures_in_a_row", n))
	}
	time.AfterFunc(d, func() {
		t.off.And(^uint32(offBackoff))
		h.flush()
	})
}

// pause takes t out of rotation (paused) or puts it back, whatever the
// owner's routing: the worker asked for no connections for now. What it
// was sent stays queued; check reads it back if it does not move.
func (h *handoff) pause(t *target, paused bool) {
	if paused {
		t.off.Or(offPaused)
		return
	}
	if t.off.And(^uint32(offPaused))&offPaused != 0 {
		h.flush()
	}
}

// enqueue holds fds until a worker is ready, within the queue's bounds
// (see deliver for at and peers).
func (h *handoff) enqueue(fds []int, at []uint8, peers []ipc.Peer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for i, fd := range fds {
		if len(h.pending) >= h.queueMax {
			h.drop(fd, "no worker ready and queue full")
			continue
		}
		h.pending = append(h.pending, pendingConn{fd: fd, since: now, peer: peerAt(peers, at, i)})
	}
	// A worker may have become available since the pick; its flush ran
	// before these were queued. Under mu, one of the two sees the other.
	h.flushLocked(now)
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

// rearm sets the one timer that flushes the queue when its oldest
// connection expires. Retries are not timed: whatever makes a worker
// available again (route, a waiter seeing room, the end of a back-off, a
// stall or a pause) flushes. Called with h.mu held.
func (h *handoff) rearm(now time.Time) {
	if len(h.pending) == 0 {
		if h.timer != nil {
			h.timer.Stop()
		}
		return
	}
	d := h.queueTimeout - now.Sub(h.pending[0].since)
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.flush)
		return
	}
	h.timer.Reset(d)
}

// flush hands queued connections to available workers and closes those
// that waited longer than the queue timeout. The owner calls it when a
// worker becomes ready.
func (h *handoff) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushLocked(time.Now())
}

// flushLocked sends the queue in full frames, a worker per frame. Its work
// is bounded: a worker that fails a send is unavailable for the rest of the
// pass (and until it can take connections again), so a pass costs at most
// one failed send per worker plus one per frame sent.
func (h *handoff) flushLocked(now time.Time) {
	i := 0
	for i < len(h.pending) && now.Sub(h.pending[i].since) >= h.queueTimeout {
		h.drop(h.pending[i].fd, "waited too long for a ready worker")
		i++
	}
	for fails := 0; i < len(h.pending) && fails <= h.bal.Len(); {
		t, ok := h.bal.Pick()
		if !ok {
			break
		}
		n := min(len(h.pending)-i, maxBatch)
		for k, p := range h.pending[i : i+n] {
			h.ffds[k], h.fpeers[k] = p.fd, p.peer
		}
		m, err := h.send(t, h.ffds[:n], nil, h.fpeers[:n], &h.fframe)
		if m > 0 {
			if h.obs != nil {
				for _, p := range h.pending[i : i+m] {
					h.obs.ObservePendingWait(now.Sub(p.since))
				}
			}
			h.sent(t, h.ffds[:m])
			i += m
		}
		if err != nil {
			h.failed(t, err)
			fails++
		}
	}
	n := copy(h.pending, h.pending[i:])
	clear(h.pending[n:])
	h.pending = h.pending[:n]
	h.npend.Store(int32(n))
	h.rearm(now)
}

// stallAfter is how long a worker may leave its queue untouched, with
// connections in it, before they are read back and handed on.
const stallAfter = time.Second

// check finds workers that stopped taking connections (SIGSTOP, a long
// GC pause, a page-fault storm, or paused with connections queued): one
// that took none of its queued connections for stallAfter, while another
// worker is ready, leaves the rotation, and the supervisor reads its queue
// back and hands it on. It returns as soon as its queue moves or is empty;
// back in rotation without having moved, it is sent one connection at a
// time until it takes one. The owner calls check from its tick (250 ms), so
// a connection waits on a stopped worker stallAfter plus a tick at most.
func (h *handoff) check(now time.Time) {
	ts := h.bal.Members()
	ready := 0
	for _, t := range ts {
		if t.off.Load()&(offStalled|offPaused) == 0 {
			ready++
		}
	}
	flush := false
	for _, t := range ts {
		untaken, taken := t.progress()
		off := t.off.Load()
		moved := taken != t.lastTaken
		if untaken == 0 || moved || t.lastMove.IsZero() {
			t.lastTaken, t.lastMove = taken, now
			if off&offStalled != 0 || moved {
				t.mu.Lock()
				t.probe = !moved
				t.mu.Unlock()
			}
			if off&offStalled != 0 {
				t.off.And(^uint32(offStalled))
				flush = true
			}
			continue
		}
		if off&offStalled == 0 {
			if now.Sub(t.lastMove) < stallAfter {
				continue
			}
			if off&offPaused == 0 {
				if ready == 1 {
					continue // the only one: nowhere better to go
				}
				ready--
			} else if ready == 0 {
				continue
			}
			t.off.Or(offStalled)
		}
		n := 0
		if t.node != nil {
			// Out of rotation until it moves. Of what it was sent, the
			// one written to it stays, taken when it resumes or handed on
			// when it exits; the rest never reached it.
			n = h.nodeWithdraw(t)
		} else {
			n = h.readBack(t, true)
		}
		if n > 0 {
			h.log.Info("worker took no connections; re-routed those queued for it", zap.Int("slot", t.slot),
				zap.Int("connections", n), zap.Duration("stalled", now.Sub(t.lastMove)))
		}
	}
	if flush {
		h.flush()
	}
}

// recover reads back the connections still queued in a dead or drained
// worker's handoff channel and hands them to other workers, returning how
// many. Call it after the worker has exited.
func (h *handoff) recover(t *target) int {
	if t.node != nil {
		return h.nodeReclaim(t)
	}
	h.bal.Remove(t)
	t.ch.Close() // after this no Send to t can succeed
	if t.keep == nil {
		return 0
	}
	defer t.keep.Close()
	return h.readBack(t, false)
}

// readBack takes the frames queued for t out through keep and hands their
// connections on, returning how many. A live worker may read at the same
// time: each frame goes whole to whichever reader takes it first.
func (h *handoff) readBack(t *target, live bool) int {
	buf := make([]byte, ipc.MaxFrame)
	scratch := new(batch)
	var fds []int
	var peers []ipc.Peer
	n := 0
	// Bounded: the queue holds at most a send buffer's worth of frames
	// (see sendLog), and malformed ones cannot appear (only this process
	// writes to the channel).
	for range 1 << 16 {
		t.mu.Lock()
		f, got, err := t.keep.TryRecv(buf, fds[:0])
		if errors.Is(err, ipc.ErrFDsTruncated) {
			// This process is out of descriptors itself: the kernel
			// closed what did not fit. Hand on the ones that came.
			h.log.Warn("reading back queued connections: out of descriptors", zap.Int("slot", t.slot),
				zap.Int("lost", f.Count()-len(got)))
			err = nil
		}
		if err == nil && f.Type == ipc.TypeConns {
			t.queue.reclaimed += uint64(len(got))
		}
		t.mu.Unlock()
		if err != nil {
			if !errors.Is(err, ipc.ErrWouldBlock) && !errors.Is(err, io.EOF) {
				h.log.Warn("reading back queued connections", zap.Int("slot", t.slot), zap.Error(err))
			}
			break
		}
		fds = got
		if f.Type != ipc.TypeConns {
			// A reuseport worker's handoff channel is its control channel:
			// give a live worker its other frames back.
			if live {
				if frame, err := ipc.AppendFrame(nil, f.Type, f.Payload); err == nil {
					t.ch.Send(frame, nil)
				}
			}
			continue
		}
		// The frame keeps its peer records, if it had them, for the next
		// worker (Decode checked there is one per descriptor).
		peers = peers[:0]
		for p := f.Peers(); len(p) >= ipc.PeerSize; p = p[ipc.PeerSize:] {
			peers = append(peers, ipc.Peer(p[:ipc.PeerSize]))
		}
		if len(peers) == 0 {
			peers = nil
		} else {
			peers = peers[:len(fds)] // after a truncation, the first ones came
		}
		n += len(fds)
		t.returned.Add(uint64(len(fds))) // it never had them: its load must not count them
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

package supervisor

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// target is a worker as the handoff path sees it: the supervisor's end of
// the worker's handoff channel and its connection counts. It is what the
// balancer picks.
type target struct {
	slot int
	ch   *ipc.Channel // supervisor's end: send accepted connections here
	// keep is a duplicate of the worker's end of the handoff channel. While
	// the supervisor holds it, connections queued for the worker survive
	// the worker's death, and recover reads them back out.
	keep *ipc.Channel

	// node is set for a Node.js worker (-worker-protocol node): its
	// connections go as newconn messages on its IPC channel, and ch and
	// keep are nil.
	node *nodeConns

	// handed counts connections sent, and only grows: it is the slot's
	// handoffs_total, a Prometheus counter, which must never go down (a
	// decrease reads as a restart, and rate() counts the whole value
	// again). returned counts those of them the worker never had: read
	// back, refused, or not answered before it exited.
	handed   atomic.Uint64
	returned atomic.Uint64
	peers    atomic.Bool   // the worker takes peer addresses in conns frames
	closed   atomic.Uint32 // connections the worker reports closed, wrapping

	// off says why the handoff must not pick the target now (off* bits);
	// zero: available. Owner routing is balancer membership, apart.
	off   atomic.Uint32
	fails atomic.Int32 // transient send errors in a row

	// mu is held across every send of a conns frame, so that the log is
	// in the order of the worker's queue.
	mu    sync.Mutex
	queue sendLog
	probe bool // read back while stalled and not moved since: one connection at a time

	// Owned by check.
	lastTaken uint64    // queue.taken - queue.reclaimed at the last move
	lastMove  time.Time // when the worker last took a connection or had none waiting
}

// Reasons a target is not available; any set bit takes it out of rotation.
const (
	offFull    = 1 << iota // queue full or at maxUntaken; a waiter clears it
	offBackoff             // a transient send error; a timer clears it
	offStalled             // its queue did not move for stallAfter; check clears it
	offPaused              // the worker asked for no connections; pause clears it
)

// Load is the worker's open connections: sent, less returned and closed.
// The worker's count wraps at 2^32, so the difference is taken in 32 bits.
func (t *target) Load() int64 {
	return int64(int32(uint32(t.handed.Load()-t.returned.Load()) - t.closed.Load()))
}

// Available reports whether the handoff may pick t now.
func (t *target) Available() bool { return t.off.Load() == 0 }

// maxUntaken bounds the connections sent to a worker and not yet taken by
// it. The kernel's bound is far looser (see sendLog), and a connection
// waiting in one worker's queue cannot go to an idle one.
const maxUntaken = 1024

// maxNodeUntaken is maxUntaken for a Node worker. Its channel carries one
// connection at a time, each waiting for the worker's NODE_HANDLE_ACK, and
// the rest wait in the supervisor's send queue, where no other worker can
// take them until the worker has exited: keep that queue short.
const maxNodeUntaken = 16

// logFrames is how many frames sendLog remembers. The socket's send buffer
// holds fewer (see sendLog); if more are untaken anyway (a raised
// net.core.wmem_default), the worker counts as full.
const logFrames = 512

// sendLog measures what a worker has taken from its handoff queue.
//
// How deep that queue is: on a socketpair each end is the other's peer, and
// for such connected SEQPACKET sockets Linux does not apply
// net.unix.max_dgram_qlen (that limit is for senders the receiver is not
// connected back to). Only the sender's SO_SNDBUF bounds the queue: each
// frame charges its skb's truesize (768 bytes for a small frame) to the
// sender until the receiver reads it, so a default 212,992-byte buffer
// takes 278 frames, up to 17,792 descriptors, before EAGAIN. Hence
// maxUntaken.
//
// What is taken: SIOCINQ on the receiving end (keep) returns, for
// SEQPACKET, the payload bytes of every frame still queued. Frames leave
// the queue in order, so the bytes sent minus those queued is a prefix of
// the frames sent; the log of the last logFrames frames' cumulative bytes
// and connections turns that prefix into connections, exactly. (SIOCOUTQ on
// the sending end counts truesize, which does not tell connections apart.)
// Guarded by target.mu.
type sendLog struct {
	bytes     uint64 // payload bytes of the conns frames sent
	conns     uint64 // connections in them
	frames    uint64 // how many
	taken     uint64 // connections out of the queue when last measured
	reclaimed uint64 // of those, connections the supervisor read back
	ends      [logFrames]struct{ bytes, conns uint64 }
}

// add records a frame of n connections and size payload bytes, sent.
func (q *sendLog) add(size, n int) {
	q.bytes += uint64(size)
	q.conns += uint64(n)
	q.ends[q.frames%logFrames] = struct{ bytes, conns uint64 }{q.bytes, q.conns}
	q.frames++
}

// settle updates taken given queued, the payload bytes still in the queue.
func (q *sendLog) settle(queued uint64) {
	if queued > q.bytes {
		// Frames sent outside the handoff (control frames on a reuseport
		// worker's channel) are queued too: nothing is known taken.
		return
	}
	out := q.bytes - queued // bytes taken: the first frames' whole
	oldest := q.frames - min(q.frames, logFrames)
	i := q.frames
	for i > oldest && q.ends[(i-1)%logFrames].bytes > out {
		i--
	}
	if i > oldest {
		q.taken = max(q.taken, q.ends[(i-1)%logFrames].conns)
	}
	// Otherwise no frame is taken yet, or more than logFrames frames are
	// queued: the last measure stands, and says no fewer are untaken.
}

// untaken is the connections sent and not taken, as last measured.
func (q *sendLog) untaken() int { return int(q.conns - q.taken) }

// measure reads how much of t's queue is taken. Called with t.mu held, so
// that no frame is sent between the ioctl and the arithmetic.
func (t *target) measure() {
	if t.node != nil {
		return // answered counts each connection the worker takes
	}
	if t.keep == nil {
		// Nothing to measure with: count everything taken.
		t.queue.taken = t.queue.conns
		return
	}
	rc, err := t.keep.SyscallConn()
	if err != nil {
		return
	}
	var queued int
	var qerr error
	if err := rc.Control(func(fd uintptr) { queued, qerr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || qerr != nil {
		return // closed: recover takes it from here
	}
	t.queue.settle(uint64(queued))
}

// room is how many of n connections t may take now without exceeding its
// bound. Called with t.mu held; it measures only when the last measure
// says there is no room, so a worker that keeps up costs one ioctl per
// maxUntaken connections.
func (t *target) room(n int) int {
	limit := maxUntaken
	if t.node != nil {
		limit = maxNodeUntaken
	}
	if t.probe {
		limit = 1
	}
	if t.queue.untaken()+n > limit {
		t.measure()
	}
	return max(0, min(n, limit-t.queue.untaken()))
}

// progress measures t and returns its untaken connections and the
// connections the worker itself has taken so far.
func (t *target) progress() (untaken int, taken uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.measure()
	return t.queue.untaken(), t.queue.taken - t.queue.reclaimed
}

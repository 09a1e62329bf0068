package handoff

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/sticky"
)

// maxBatch bounds the connections accepted per wake-up and so the
// descriptors sent in one frame.
const maxBatch = ipc.MaxFDs

// Policy picks the target of each connection among the routed ones: a
// balancer (round-robin, least-conn). dispatch is the one place a pick is
// made for a new connection, so a policy that picks by the connection
// (a sticky key, peeked) is one new piece there.
type Policy = balancer.Balancer[*Target]

// Handoff moves accepted connections to workers: it asks the policy for a
// worker, sends the connection over that worker's transport and closes its
// own copy once the worker has its own (see Transport.holds). A connection
// no worker takes waits in a bounded queue until one is ready; one whose
// worker died or stopped taking connections is taken back and offered to
// another. It is safe for concurrent use: accept loops, waiters and timers
// of its own, and the supervisor's owner goroutine call it.
//
// A worker is picked only while it is routed (a policy member: Route and
// Unroute) and available (Target.off is zero): not full, not backing off
// after a transient error, not stalled, not paused.
type Handoff struct {
	policy       Policy
	loadReports  bool // the policy reads Load, so workers report closed connections
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
	pending []Pending   // in arrival order
	timer   *time.Timer // expires the oldest queued connection
	npend   atomic.Int32
	// flush's scratch, guarded by mu.
	ffds   [maxBatch]int
	fpeers [maxBatch]ipc.Peer
	fframe [ipc.MaxConnsFrame]byte

	obs Observer    // metrics; nil for none. Set before the first accept.
	st  *stickiness // routing by key and PROXY headers (sticky.go); nil for none. Set before the first accept.

	failures  atomic.Uint64 // sends that failed
	retried   atomic.Uint64 // handoffs that failed and went to another worker
	dropped   atomic.Uint64 // connections closed unserved: queue full or too old
	recovered atomic.Uint64 // connections taken back from a dead or stalled worker

	handedBack atomic.Uint64 // connections workers handed back (handback.go)
	unplaced   atomic.Uint64 // of those, closed because no worker could take them
	wants      wants         // where rebalancing sends them (rebalance.go)
}

// Observer receives timings from the handoff path; it must not allocate.
type Observer interface {
	ObserveHandoff(time.Duration)
	ObservePendingWait(time.Duration)
}

// New is a handoff picking workers by the balancer policy (see
// balancer.Policies), queueing up to queueMax connections for at most
// queueTimeout while no worker is available.
func New(policy string, log *zap.Logger, queueMax int, queueTimeout time.Duration) (*Handoff, error) {
	bal, err := balancer.New[*Target](policy)
	if err != nil {
		return nil, err
	}
	return &Handoff{policy: bal, loadReports: policy == "least-conn", log: log, queueMax: queueMax,
		queueTimeout: queueTimeout, oneCPU: runtime.NumCPU() == 1}, nil
}

// Observe gives the handoff the metrics' timing observer, before any
// accept.
func (h *Handoff) Observe(o Observer) {
	if h != nil {
		h.obs = o
	}
}

// LoadReports says whether workers are to report closed connections, which
// makes Target.Load exact for a policy that reads it (least-conn). A nil
// Handoff (a mode without one) wants none.
func (h *Handoff) LoadReports() bool { return h != nil && h.loadReports }

// Route lets a ready worker receive connections and offers it the queue;
// Unroute takes it out of rotation (it drains, or is replaced). A nil
// Handoff or Target is none: both do nothing.
func (h *Handoff) Route(t *Target) {
	if h == nil || t == nil {
		return
	}
	h.policy.Add(t)
	if h.st != nil {
		h.st.routed(t)
	}
	h.Flush()
}

func (h *Handoff) Unroute(t *Target) {
	if h != nil && t != nil {
		h.policy.Remove(t)
		h.unwant(t)
		if h.st != nil {
			h.st.unrouted(t)
		}
	}
}

// Stats are the handoff's counters, for metrics.
type Stats struct {
	Failures uint64 // sends that failed
	Reroutes uint64 // connections that went to another worker than first picked
	Dropped  uint64 // connections closed unserved
	Pending  int    // connections queued now
	// HandedBack counts idle connections draining workers handed back;
	// Unplaced, those of them closed because no worker could take them.
	// The rest moved to another worker.
	HandedBack, Unplaced uint64
}

// Stats reports the counters; a nil Handoff has none.
func (h *Handoff) Stats() Stats {
	if h == nil {
		return Stats{}
	}
	return Stats{Failures: h.failures.Load(), Reroutes: h.retried.Load() + h.recovered.Load(),
		Dropped: h.dropped.Load(), Pending: int(h.npend.Load()),
		HandedBack: h.handedBack.Load(), Unplaced: h.unplaced.Load()}
}

// batch groups the connections of one dispatch by worker, so that those
// picked for the same worker travel in one frame. Each accept loop owns one;
// it is too large to build on every call.
type batch struct {
	groups [maxBatch]struct {
		t     *Target // nil: no worker available
		fds   [maxBatch]int
		at    [maxBatch]uint8  // where each is in the burst, for its peer
		keys  [maxBatch]string // the sticky key that chose t, if any
		keyed bool             // some key did
		n     int
	}
	frame [ipc.MaxConnsFrame]byte
	peek  [sticky.MaxPeek]byte // a sticky policy's peeks
	// again: the connections were dispatched before (taken back, handed
	// back): a PROXY header is no longer theirs to read.
	again bool
}

// dispatch hands off a batch of accepted descriptors. It closes every
// descriptor it is given (after sending it, or after giving up on it) or
// queues it. peers are their addresses, or nil; workers that take them get
// them. b is the caller's scratch space.
func (h *Handoff) dispatch(fds []int, peers []ipc.Peer, b *batch) {
	if h.npend.Load() > 0 {
		h.Flush() // keep order: earlier connections first
	}
	var t *Target
	ng := 0
	for k, fd := range fds {
		key := ""
		if h.st != nil {
			var kept bool
			if t, key, kept = h.st.first(h, fd, peers, k, b); kept {
				continue // peeking, held, or closed
			}
		} else if k == 0 || !h.oneCPU {
			t, _ = h.policy.Pick()
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
		g.keys[g.n] = key
		g.keyed = g.keyed || key != ""
		g.n++
	}
	for i := range ng {
		g := &b.groups[i]
		c := conns{fds: g.fds[:g.n], at: g.at[:g.n], peers: peers, frame: &b.frame}
		if g.keyed {
			c.keys = g.keys[:g.n]
		}
		h.deliver(g.t, c)
		g.t, g.keyed = nil, false // do not keep an exited worker's target alive
	}
}

// deliver sends c to t or, what t does not take, to other workers, and
// queues what no worker takes.
func (h *Handoff) deliver(t *Target, c conns) {
	// Every failure makes its target unavailable, so each try is another
	// worker; the bound holds if others clear their marks meanwhile.
	for tries := 0; t != nil && tries <= h.policy.Len(); tries++ {
		n, err := h.send(t, c)
		if n > 0 {
			h.sent(t, c.fds[:n])
			c.fds = c.fds[n:]
			if c.at != nil {
				c.at = c.at[n:]
			} else if c.peers != nil {
				c.peers = c.peers[n:]
			}
			if c.keys != nil {
				c.keys = c.keys[n:]
			}
		}
		if len(c.fds) == 0 {
			return
		}
		h.failed(t, err)
		if c.keys != nil && errors.Is(err, ErrFull) {
			// Keyed to t's slot: wait for it, as for a restarting one.
			if c = h.st.holdFull(h, t, c); len(c.fds) == 0 {
				return
			}
		}
		h.retried.Add(uint64(len(c.fds)))
		t, _ = h.policy.Pick()
	}
	h.enqueue(c)
}

// send sends as many of c's connections to t as t has room for, and
// returns how many it sent: all of them, or fewer with the error that
// stopped the rest. The caller finishes what was sent (sent).
func (h *Handoff) send(t *Target, c conns) (int, error) {
	if !t.peers.Load() {
		c.peers, c.at = nil, nil
	}
	if t.lnIndex.Load() {
		c.records = ipc.RecordSize
	}
	t.mu.Lock()
	n := t.room(len(c.fds))
	if n == 0 {
		t.mu.Unlock()
		return 0, ErrFull
	}
	all := len(c.fds)
	c.fds = c.fds[:n]
	m, err := t.tr.send(c)
	t.mu.Unlock()
	switch {
	case err != nil:
		return m, err
	case n < all:
		return n, ErrFull
	}
	if t.fails.Load() != 0 {
		t.fails.Store(0)
	}
	return n, nil
}

// sent counts fds sent to t and, unless its transport holds them until
// the worker answers, closes our copies: the worker has its own now, and
// without closing ours the client would never see FIN when it closes.
func (h *Handoff) sent(t *Target, fds []int) {
	t.handed.Add(uint64(len(fds)))
	if !t.tr.holds() {
		ipc.CloseAll(fds)
	}
}

// failed takes t out of rotation for as long as err says: for good if its
// channel is closed, until it has room if it is full, for a short back-off
// otherwise (the worker is still there).
func (h *Handoff) failed(t *Target, err error) {
	h.failures.Add(1)
	switch {
	case errors.Is(err, ErrFull):
		h.block(t)
	case errors.Is(err, ErrGone):
		// No later pick should choose it. The owner removes it too when
		// it learns of the exit; Remove is idempotent.
		h.policy.Remove(t)
		if h.st != nil {
			h.st.unrouted(t)
		}
	default:
		h.backOff(t, err)
	}
}

// block marks t full and has its transport wake it when it has room; then
// it offers it the queue.
func (h *Handoff) block(t *Target) {
	if t.off.Or(offFull)&offFull != 0 {
		return // a waiter is on it
	}
	t.tr.awaitRoom(t.hasRoom, func(err error) {
		if t.off.And(^uint32(offFull))&offFull != 0 && err == nil {
			h.Flush()
		}
	})
}

// roomMade: t's transport learnt that the worker took connections; if t
// was full and has room now, it takes the queue again.
func (h *Handoff) roomMade(t *Target) {
	if t.off.Load()&offFull != 0 && t.hasRoom() && t.off.And(^uint32(offFull))&offFull != 0 {
		h.Flush()
	}
}

// Back-off after a transient send error: it doubles from backoffMin while
// the errors continue, up to backoffMax.
const (
	backoffMin = 5 * time.Millisecond
	backoffMax = time.Second
)

// backOff takes t out of rotation for a moment after a transient error.
func (h *Handoff) backOff(t *Target, err error) {
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
		h.Flush()
	})
}

// Pause takes t out of rotation (paused) or puts it back, whatever its
// routing: the worker asked for no connections for now. What it was sent
// stays queued; Check takes it back if it does not move. Nil is none.
func (h *Handoff) Pause(t *Target, paused bool) {
	if h == nil || t == nil {
		return
	}
	if paused {
		t.off.Or(offPaused)
		return
	}
	if t.off.And(^uint32(offPaused))&offPaused != 0 {
		h.Flush()
	}
}

// Routed reports whether t is in rotation (Route, and not Unroute or an
// exit since), available or not.
func (h *Handoff) Routed(t *Target) bool {
	return h != nil && t != nil && slices.Contains(h.policy.Members(), t)
}

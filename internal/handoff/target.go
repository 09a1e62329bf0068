package handoff

import (
	"sync"
	"sync/atomic"
	"time"
)

// Target is a worker as the handoff sees it: its transport and its
// connection counts. It is what the policy picks.
type Target struct {
	slot int
	gen  int // the worker's generation (SetGeneration), for a sticky table
	tr   Transport

	// handed counts connections sent, and only grows: it is the slot's
	// handoffs_total, a Prometheus counter, which must never go down (a
	// decrease reads as a restart, and rate() counts the whole value
	// again). returned counts those of them the worker never had: read
	// back, refused, or not answered before it exited.
	handed   atomic.Uint64
	returned atomic.Uint64
	back     atomic.Uint64 // connections the worker handed back (Receive)
	peers    atomic.Bool   // the worker takes peer addresses with its connections
	lnIndex  atomic.Bool   // and their listener's index (ipc.FeatureListeners)
	closed   atomic.Uint32 // connections the worker reports closed, wrapping

	// off says why the handoff must not pick the target now (off* bits);
	// zero: available. Routing is policy membership, apart.
	off   atomic.Uint32
	fails atomic.Int32 // transient send errors in a row

	// mu is held across every send, so that the transport's accounting is
	// in the order of the worker's queue. Lock order: Handoff.mu, then
	// Target.mu, then what the transport locks.
	mu    sync.Mutex
	probe bool // taken back while stalled and not moved since: one connection at a time

	// Owned by check.
	lastTaken uint64    // taken at the last move
	lastMove  time.Time // when the worker last took a connection or had none waiting
}

// Reasons a target is not available; any set bit takes it out of rotation.
const (
	offFull    = 1 << iota // at its transport's window; awaitRoom clears it
	offBackoff             // a transient send error; a timer clears it
	offStalled             // its queue did not move for stallAfter; check clears it
	offPaused              // the worker asked for no connections; Pause clears it
)

// NewTarget is the worker in slot as the handoff sees it, reached over tr.
func NewTarget(slot int, tr Transport) *Target {
	return &Target{slot: slot, tr: tr}
}

// SetGeneration records the worker's generation, before it is routed: a
// sticky policy forgets the keys a slot claimed when it changes.
func (t *Target) SetGeneration(gen int) { t.gen = gen }

// Slot is the worker's slot.
func (t *Target) Slot() int { return t.slot }

// Load is the worker's open connections: sent, less returned and closed.
// The worker's count wraps at 2^32, so the difference is taken in 32 bits.
func (t *Target) Load() int64 {
	return int64(int32(uint32(t.handed.Load()-t.returned.Load()) - t.closed.Load()))
}

// Available reports whether the handoff may pick t now.
func (t *Target) Available() bool { return t.off.Load() == 0 }

// Handed is how many connections t was ever sent (handoffs_total).
func (t *Target) Handed() uint64 { return t.handed.Load() }

// HandedBack is how many connections t's worker handed back.
func (t *Target) HandedBack() uint64 { return t.back.Load() }

// TakesPeers records that the worker takes its connections' peer
// addresses (its ready frame said so); before the owner routes it.
func (t *Target) TakesPeers() { t.peers.Store(true) }

// TakesListeners records that the worker takes, with each peer, the index
// of the listener the connection came from (ipc.FeatureListeners).
func (t *Target) TakesListeners() { t.lnIndex.Store(true) }

// Closed records the worker's own count of the connections it closed (its
// load report), which makes Load exact.
func (t *Target) Closed(n uint32) { t.closed.Store(n) }

// Close releases what the transport holds, for a worker that never
// started.
func (t *Target) Close() { t.tr.close() }

// room is how many of n connections t may take now without exceeding its
// window. Called with t.mu held; it measures only when the last measure
// says there is no room, so a worker that keeps up costs one measure per
// window.
func (t *Target) room(n int) int {
	limit := t.tr.window()
	if t.probe {
		limit = 1
	}
	u := t.tr.untaken(false)
	if u+n > limit {
		u = t.tr.untaken(true)
	}
	return max(0, min(n, limit-u))
}

// hasRoom reports whether t may take a connection. A transport's waiter
// may call it while holding a reference that a sender holding t.mu waits
// for (see Frames.awaitRoom): so a busy t.mu counts as room, and the flush
// finds out.
func (t *Target) hasRoom() bool {
	if !t.mu.TryLock() {
		return true
	}
	defer t.mu.Unlock()
	return t.room(1) > 0
}

// progress measures t and returns its untaken connections and the
// connections the worker itself has taken so far.
func (t *Target) progress() (untaken int, taken uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tr.untaken(true), t.tr.taken()
}

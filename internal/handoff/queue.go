package handoff

import (
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// Pending is a connection queued until a worker is ready.
type Pending struct {
	FD    int
	Peer  ipc.Peer // zero: unknown, the worker asks the kernel
	since time.Time
	back  bool // a worker handed it back (handback.go)
}

// enqueue holds c's connections until a worker is ready, within the
// queue's bounds.
func (h *Handoff) enqueue(c conns) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for i, fd := range c.fds {
		if len(h.pending) >= h.queueMax {
			h.drop(fd, c.back, "no worker ready and queue full")
			continue
		}
		h.pending = append(h.pending, Pending{FD: fd, since: now, Peer: c.peer(i), back: c.back})
	}
	// A worker may have become available since the pick; its flush ran
	// before these were queued. Under mu, one of the two sees the other.
	h.flushLocked(now)
}

// drop closes a connection no worker will take and counts it (back: one
// a worker handed back, counted apart too). It logs at powers of two of
// the total, so that a full queue expiring at once is a few lines, not
// thousands.
func (h *Handoff) drop(fd int, back bool, why string) {
	unix.Close(fd)
	if back {
		h.unplaced.Add(1)
	}
	if n := h.dropped.Add(1); n&(n-1) == 0 {
		h.log.Warn("connection closed unserved: "+why, zap.Int("queue_max", h.queueMax),
			zap.Duration("queue_timeout", h.queueTimeout), zap.Uint64("dropped_total", n))
	}
}

// rearm sets the one timer that flushes the queue when its oldest
// connection expires. Retries are not timed: whatever makes a worker
// available again (route, a waiter seeing room, the end of a back-off, a
// stall or a pause) flushes. Called with h.mu held.
func (h *Handoff) rearm(now time.Time) {
	if len(h.pending) == 0 {
		if h.timer != nil {
			h.timer.Stop()
		}
		return
	}
	d := h.queueTimeout - now.Sub(h.pending[0].since)
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.Flush)
		return
	}
	h.timer.Reset(d)
}

// Flush hands queued connections to available workers and closes those
// that waited longer than the queue timeout. A nil Handoff has no queue.
func (h *Handoff) Flush() {
	if h == nil {
		return
	}
	if h.st != nil {
		h.st.release(h) // keyed connections first, to their slots
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushLocked(time.Now())
}

// flushLocked sends the queue in full batches, a worker per batch. Its
// work is bounded: a worker that fails a send is unavailable for the rest
// of the pass (and until it can take connections again), so a pass costs
// at most one failed send per worker plus one per batch sent.
func (h *Handoff) flushLocked(now time.Time) {
	i := 0
	for i < len(h.pending) && now.Sub(h.pending[i].since) >= h.queueTimeout {
		h.drop(h.pending[i].FD, h.pending[i].back, "waited too long for a ready worker")
		i++
	}
	for fails := 0; i < len(h.pending) && fails <= h.policy.Len(); {
		t, ok := h.policy.Pick()
		if !ok {
			break
		}
		n := min(len(h.pending)-i, maxBatch)
		for k, p := range h.pending[i : i+n] {
			h.ffds[k], h.fpeers[k] = p.FD, p.Peer
		}
		m, err := h.send(t, conns{fds: h.ffds[:n], peers: h.fpeers[:n], frame: &h.fframe})
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

// Pending is how many connections wait for a worker now.
func (h *Handoff) Pending() int {
	if h == nil {
		return 0
	}
	return int(h.npend.Load())
}

// CloseQueue closes every queued connection (at stop, when no worker is
// left to take them) and returns how many.
func (h *Handoff) CloseQueue() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.pending)
	for _, p := range h.pending {
		unix.Close(p.FD)
	}
	h.pending = nil
	h.npend.Store(0)
	if h.timer != nil {
		h.timer.Stop()
	}
	return n
}

// TakeQueue takes every queued connection out of the queue, for an
// upgrade to keep: the caller owns them.
func (h *Handoff) TakeQueue() []Pending {
	h.mu.Lock()
	defer h.mu.Unlock()
	pend := h.pending
	h.pending = nil
	h.npend.Store(0)
	h.rearm(time.Now())
	return pend
}

// Requeue puts connections back at the head of the queue (TakeQueue's, or
// an upgrade's kept ones, which count as new arrivals) and offers them to
// the workers routed.
func (h *Handoff) Requeue(pend []Pending) {
	h.mu.Lock()
	now := time.Now()
	for i := range pend {
		if pend[i].since.IsZero() {
			pend[i].since = now
		}
	}
	h.pending = append(pend, h.pending...)
	h.npend.Store(int32(len(h.pending)))
	h.mu.Unlock()
	h.Flush()
}

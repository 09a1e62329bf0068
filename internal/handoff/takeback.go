package handoff

import (
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/ipc"
)

// stallAfter is how long a worker may leave its queue untouched, with
// connections in it, before they are taken back and handed on.
const stallAfter = time.Second

// Check finds workers that stopped taking connections (SIGSTOP, a long
// GC pause, a page-fault storm, or paused with connections queued): one
// that took none of its queued connections for stallAfter, while another
// worker is ready, leaves the rotation, and what it was sent and has not
// been given yet is taken back and handed on. It returns as soon as its
// queue moves or is empty; back in rotation without having moved, it is
// sent one connection at a time until it takes one. The owner calls Check
// from its tick (250 ms), so a connection waits on a stopped worker
// stallAfter plus a tick at most. A nil Handoff has nothing to check.
func (h *Handoff) Check(now time.Time) {
	if h == nil {
		return
	}
	ts := h.policy.Members()
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
		// Out of rotation until it moves.
		if n := h.takeBack(t, true); n > 0 {
			h.log.Info("worker took no connections; re-routed those queued for it", zap.Int("slot", t.slot),
				zap.Int("connections", n), zap.Duration("stalled", now.Sub(t.lastMove)))
		}
	}
	if flush {
		h.Flush()
	}
}

// Recover takes back what an exited worker was sent and did not take, and
// hands it to other workers, returning how many. Call it after the worker
// has exited. Nil is none.
func (h *Handoff) Recover(t *Target) int {
	if h == nil || t == nil {
		return 0
	}
	h.policy.Remove(t)
	if h.st != nil {
		h.st.unrouted(t) // its keyed connections wait for the slot's next worker
	}
	return h.takeBack(t, false)
}

// takeBack hands on what t's transport gives back (see Transport.takeBack).
func (h *Handoff) takeBack(t *Target, live bool) int {
	var scratch *batch
	return t.tr.takeBack(&t.mu, live, func(fds []int, peers []ipc.Peer) {
		t.returned.Add(uint64(len(fds))) // it never had them: its load must not count them
		h.recovered.Add(uint64(len(fds)))
		if scratch == nil {
			scratch = &batch{again: true}
		}
		h.dispatch(fds, peers, scratch)
	})
}

// redeliver hands connections that from gave back to another worker if one
// is available, else queues them.
func (h *Handoff) redeliver(from *Target, fds []int, peers []ipc.Peer) {
	t, ok := h.policy.Pick()
	if ok && t == from {
		t, ok = h.policy.Pick() // the next one, if there is another
	}
	if !ok {
		t = nil
	}
	h.deliver(t, conns{fds: fds, peers: peers, frame: new([ipc.MaxConnsFrame]byte)})
}

package handoff

import (
	"time"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/sticky"
)

// hold keeps c for sl's worker, which is restarting or cannot take it
// now, for at most cfg.Hold. s.mu held.
func (s *stickiness) hold(h *Handoff, sl *stickySlot, c *held) {
	sl.held = append(sl.held, c)
	s.nheld.Add(1)
	if sl.timer == nil {
		sl.timer = time.AfterFunc(s.cfg.Hold, func() { s.expire(h, sl) })
	} else if len(sl.held) == 1 {
		sl.timer.Reset(s.cfg.Hold)
	}
}

// holdFull keeps c's keyed connections, which t could not take because it
// is full, for t's slot, as for a worker that restarts: they go to it
// when it has room (release), or after cfg.Hold to the next slot by hash.
// It returns the rest, which the balance places. Without -sticky-hold, or
// once t's slot is gone, it keeps none.
func (s *stickiness) holdFull(h *Handoff, t *Target, c conns) conns {
	rest := conns{records: c.records, frame: c.frame, back: c.back}
	now := time.Now()
	s.mu.Lock()
	sl := s.slots[t.slot]
	for i, fd := range c.fds {
		if key := c.keys[i]; key != "" && sl != nil && s.cfg.Hold > 0 {
			// Counted again when released: it was counted when picked.
			s.hits.Add(^uint64(0))
			sl.keyed--
			s.hold(h, sl, &held{fd: fd, peer: c.peer(i), key: key, since: now})
			continue
		}
		rest.fds = append(rest.fds, fd)
		if c.peers != nil {
			rest.peers = append(rest.peers, c.peer(i))
		}
	}
	s.mu.Unlock()
	// The worker may have taken what it had, and the flush that follows
	// found nothing held yet, between the failed send and the hold above:
	// then no later flush comes for these until cfg.Hold. Look once more.
	t.mu.Lock()
	room := t.room(1) > 0
	t.mu.Unlock()
	if room {
		s.release(h)
	}
	return rest
}

// expire sends sl's connections that waited cfg.Hold to the next slot by
// hash, and rearms for the rest.
func (s *stickiness) expire(h *Handoff, sl *stickySlot) {
	now := time.Now()
	s.mu.Lock()
	i := 0
	for i < len(sl.held) && now.Sub(sl.held[i].since) >= s.cfg.Hold {
		i++
	}
	old := sl.held[:i:i]
	sl.held = sl.held[i:]
	if len(sl.held) > 0 {
		sl.timer.Reset(s.cfg.Hold - now.Sub(sl.held[0].since))
	}
	var ts []*Target
	for _, c := range old {
		ts = append(ts, s.nextLocked(c.key))
	}
	s.mu.Unlock()
	for i, c := range old {
		s.nheld.Add(-1)
		s.holdExpired.Add(1)
		s.fallbacks.Add(1)
		t := ts[i]
		if t == nil {
			t, _ = h.policy.Pick()
		}
		h.deliver(t, conns{fds: []int{c.fd}, peers: []ipc.Peer{c.peer}, frame: new([ipc.MaxConnsFrame]byte)})
	}
}

// await keeps c until its key is claimed (Handoff.Claim) or
// Key.AwaitClaim passes; then it goes on without waiting. s.mu held.
func (s *stickiness) await(h *Handoff, c *held) {
	s.awaiting[c.key] = append(s.awaiting[c.key], c)
	s.nheld.Add(1)
	c.timer = time.AfterFunc(s.cfg.Key.AwaitClaim, func() {
		s.mu.Lock()
		ws := s.awaiting[c.key]
		for i, w := range ws {
			if w == c {
				ws = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(s.awaiting, c.key)
		} else {
			s.awaiting[c.key] = ws
		}
		s.mu.Unlock()
		s.nheld.Add(-1)
		s.timeouts.Add(1)
		h.place(c.fd, c.peer, c.key, false, nil)
	})
}

// release sends held connections to their slots' workers that can take
// them now: Flush calls it whenever a worker may have become available.
func (s *stickiness) release(h *Handoff) {
	if s.nheld.Load() == 0 {
		return
	}
	type batch struct {
		t  *Target
		hs []*held
	}
	var out []batch
	s.mu.Lock()
	for _, sl := range s.slots {
		if len(sl.held) == 0 {
			continue
		}
		if t := sl.ready(); t != nil {
			out = append(out, batch{t, sl.held})
			sl.keyed += uint64(len(sl.held))
			sl.held = nil
			sl.timer.Stop()
		}
	}
	s.mu.Unlock()
	for _, b := range out {
		for _, c := range b.hs {
			s.nheld.Add(-1)
			s.hits.Add(1)
			h.deliver(b.t, conns{fds: []int{c.fd}, peers: []ipc.Peer{c.peer}, frame: new([ipc.MaxConnsFrame]byte), keys: []string{c.key}})
		}
	}
}

// StickyStats are the sticky policy's counters and sizes, for status and
// metrics.
type StickyStats struct {
	Key           string         // -sticky, "" for none
	Hits          uint64         // keyed connections sent to their slot
	Fallbacks     uint64         // connections without a key or slot, sent by the balance or the next slot
	PeekTimeouts  uint64         // connections whose key did not come within -sticky-wait (or claim wait)
	HoldExpired   uint64         // keyed connections that waited -sticky-hold for their slot in vain
	ProxyRejected uint64         // connections closed for their PROXY header: untrusted, malformed, slow
	Held          int            // connections held for a slot or a claim now
	Peeking       int            // connections whose first bytes are awaited now
	Keyed         map[int]uint64 // connections sent by key, per slot
	Table         sticky.TableStats
}

// StickyStats reports them; zero for a handoff that routes by no key.
func (h *Handoff) StickyStats() StickyStats {
	if h == nil || h.st == nil {
		return StickyStats{}
	}
	s := h.st
	st := StickyStats{Key: s.cfg.Key.Spec, Hits: s.hits.Load(), Fallbacks: s.fallbacks.Load(),
		PeekTimeouts: s.timeouts.Load(), HoldExpired: s.holdExpired.Load(), ProxyRejected: s.proxyRejected.Load(),
		Held: int(s.nheld.Load()), Keyed: map[int]uint64{}}
	if s.pk != nil {
		st.Peeking = s.pk.count()
	}
	s.mu.Lock()
	for id, sl := range s.slots {
		st.Keyed[id] = sl.keyed
	}
	s.mu.Unlock()
	if s.cfg.Table != nil {
		st.Table = s.cfg.Table.Stats()
	}
	return st
}

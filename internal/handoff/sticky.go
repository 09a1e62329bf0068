package handoff

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/proxyproto"
	"github.com/prefork/prefork/internal/sticky"
)

// StickyConfig is how a handoff routes by key (-sticky) and reads PROXY
// headers (-proxy-protocol): what it needs of a connection before it picks.
type StickyConfig struct {
	Key   sticky.Key    // Spec "": no key, every connection by the balance
	Wait  time.Duration // how long a key is peeked for (-sticky-wait)
	Hold  time.Duration // how long a keyed connection waits for its slot's worker (-sticky-hold)
	Table *sticky.Table // keys workers claimed; nil: none
	// Forget says when a slot's claims go: "generation" (a worker of
	// another generation is routed in it), "worker" (any other worker),
	// or "never" (only by the table's bounds).
	Forget string

	Proxy     bool             // each connection starts with a PROXY header
	Trust     proxyproto.Trust // the sources that may send one (-proxy-from)
	ProxyWait time.Duration    // how long its header may take
}

// stickiness is a handoff's sticky policy. Its state (the live slots and
// what waits for them) is guarded by mu, taken alone: never with
// Handoff.mu or a Target.mu held.
type stickiness struct {
	cfg StickyConfig
	pk  *peeker

	mu       sync.Mutex
	slots    map[int]*stickySlot
	ids      []int // live slots, sorted: rendezvous hashes over them
	awaiting map[string][]*held
	nheld    atomic.Int32 // connections held or awaiting, to skip release cheaply

	hits, fallbacks, timeouts, holdExpired, proxyRejected atomic.Uint64
}

// stickySlot is a live slot (it had a worker and was not scaled away):
// keys hash to it even while its worker restarts.
type stickySlot struct {
	id      int
	targets []*Target // routed, newest last (two while a reload replaces one)
	held    []*held   // keyed connections waiting for a worker, oldest first
	timer   *time.Timer
	keyed   uint64  // connections sent to it by key
	last    *Target // the worker routed last, and its generation
	gen     int
}

// held is a keyed connection the policy keeps for now.
type held struct {
	fd    int
	peer  ipc.Peer
	key   string
	since time.Time
	timer *time.Timer // awaiting a claim
}

// Stick makes h route by cfg: before its first accept.
func (h *Handoff) Stick(cfg StickyConfig) error {
	s := &stickiness{cfg: cfg, slots: map[int]*stickySlot{}, awaiting: map[string][]*held{}}
	if cfg.Proxy || cfg.Key.Peek {
		pk, err := newPeeker(h, s)
		if err != nil {
			return err
		}
		s.pk = pk
	}
	h.st = s
	return nil
}

// ready is the newest available routed target of the slot, or nil.
func (sl *stickySlot) ready() *Target {
	for i := len(sl.targets) - 1; i >= 0; i-- {
		if sl.targets[i].Available() {
			return sl.targets[i]
		}
	}
	return nil
}

// routed: t takes connections; its slot is live.
func (s *stickiness) routed(t *Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[t.slot]
	if sl == nil {
		sl = &stickySlot{id: t.slot}
		s.slots[t.slot] = sl
		i, _ := slices.BinarySearch(s.ids, t.slot)
		s.ids = slices.Insert(s.ids, i, t.slot)
	}
	if !slices.Contains(sl.targets, t) {
		sl.targets = append(sl.targets, t)
	}
	if sl.last != nil && s.cfg.Table != nil &&
		(s.cfg.Forget == "worker" && sl.last != t || s.cfg.Forget == "generation" && sl.gen != t.gen) {
		s.cfg.Table.ForgetSlot(t.slot)
	}
	sl.last, sl.gen = t, t.gen
}

// unrouted: t takes no more; its slot stays live, waiting for the next.
func (s *stickiness) unrouted(t *Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[t.slot]; sl != nil {
		sl.targets = slices.DeleteFunc(sl.targets, func(x *Target) bool { return x == t })
	}
}

// pick chooses fd's target by key: its slot's worker (t, true); or it
// keeps fd, held for its slot's worker or awaiting a claim (nil, true);
// or it makes no choice (nil, false) and the balance picks.
func (s *stickiness) pick(h *Handoff, key string, fd int, peer ipc.Peer, await bool) (*Target, bool) {
	t, kept, _ := s.pickHit(h, key, fd, peer, await)
	return t, kept
}

// pickHit is pick that also says whether t is key's own slot's worker
// (a hit), not a fallback.
func (s *stickiness) pickHit(h *Handoff, key string, fd int, peer ipc.Peer, await bool) (*Target, bool, bool) {
	if key == "" {
		s.fallbacks.Add(1)
		return nil, false, false
	}
	slot, claimed := 0, false
	if s.cfg.Table != nil {
		slot, claimed = s.cfg.Table.Lookup(key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !claimed && await && s.cfg.Table != nil {
		// Claim may have come between the Lookup and mu: it fills the
		// table before it takes mu to wake the awaiting, so a second
		// look under mu either finds it or is found by it.
		slot, claimed = s.cfg.Table.Lookup(key)
	}
	sl := s.slots[slot]
	if !claimed || sl == nil {
		if s.cfg.Key.ClaimedOnly {
			if await && s.cfg.Key.AwaitClaim > 0 {
				s.await(h, &held{fd: fd, peer: peer, key: key, since: time.Now()})
				return nil, true, false
			}
			s.fallbacks.Add(1)
			return nil, false, false
		}
		id, ok := sticky.Pick(key, s.ids)
		if !ok {
			s.fallbacks.Add(1)
			return nil, false, false
		}
		sl = s.slots[id]
	}
	if t := sl.ready(); t != nil {
		s.hits.Add(1)
		sl.keyed++
		return t, true, true
	}
	if s.cfg.Hold > 0 {
		s.hold(h, sl, &held{fd: fd, peer: peer, key: key, since: time.Now()})
		return nil, true, false
	}
	s.fallbacks.Add(1)
	t := s.nextLocked(key)
	return t, t != nil, false
}

// nextLocked is the ready target of the live slot that scores highest for
// key, so that keys of a slot without a worker spread as a hash would
// spread them; nil if none is ready.
func (s *stickiness) nextLocked(key string) *Target {
	kh := sticky.HashKey(key)
	var best *Target
	var bestScore uint64
	for _, id := range s.ids {
		if t := s.slots[id].ready(); t != nil {
			if sc := sticky.Score(kh, id); best == nil || sc > bestScore {
				best, bestScore = t, sc
			}
		}
	}
	return best
}

// Claim routes key to slot from now on (a worker of slot made it up: a
// session id), and sends the connections awaiting that claim. Both
// transports reach it: the supervisor calls it for a prefork worker's
// claim frame (cluster.Claim) and for a Node worker's message. A handoff
// without a table ignores it.
func (h *Handoff) Claim(key string, slot int) {
	if h == nil || h.st == nil || h.st.cfg.Table == nil || key == "" {
		return
	}
	s := h.st
	s.cfg.Table.Claim(key, slot)
	s.mu.Lock()
	ws := s.awaiting[key]
	delete(s.awaiting, key)
	s.mu.Unlock()
	for _, w := range ws {
		if w.timer.Stop() {
			s.nheld.Add(-1)
			h.place(w.fd, w.peer, w.key, false, nil)
		}
	}
}

// ForgetSlot drops the keys slot's workers claimed: its worker changed
// generation, and the sessions they named are gone.
func (h *Handoff) ForgetSlot(slot int) {
	if h != nil && h.st != nil && h.st.cfg.Table != nil {
		h.st.cfg.Table.ForgetSlot(slot)
	}
}

// RetireSlot: slot was scaled away. Its keys hash elsewhere from now on,
// and what waited for it goes there.
func (h *Handoff) RetireSlot(slot int) {
	if h == nil || h.st == nil {
		return
	}
	s := h.st
	s.mu.Lock()
	sl := s.slots[slot]
	delete(s.slots, slot)
	s.ids = slices.DeleteFunc(s.ids, func(id int) bool { return id == slot })
	var hs []*held
	if sl != nil {
		hs, sl.held = sl.held, nil
		if sl.timer != nil {
			sl.timer.Stop()
		}
	}
	s.mu.Unlock()
	h.ForgetSlot(slot)
	for _, c := range hs {
		s.nheld.Add(-1)
		h.place(c.fd, c.peer, c.key, false, nil)
	}
}

// place routes one connection whose key is known: to its slot's worker,
// held, or by the balance; await: it may wait for a claim. frame is the
// caller's scratch for the frame, nil for a new one.
func (h *Handoff) place(fd int, peer ipc.Peer, key string, await bool, frame *[ipc.MaxConnsFrame]byte) {
	t, kept, hit := h.st.pickHit(h, key, fd, peer, await)
	if kept && t == nil {
		return
	}
	if t == nil {
		t, _ = h.policy.Pick()
	}
	if frame == nil {
		frame = new([ipc.MaxConnsFrame]byte)
	}
	c := conns{fds: []int{fd}, peers: []ipc.Peer{peer}, frame: frame}
	if hit {
		c.keys = []string{key}
	}
	h.deliver(t, c)
}

// first is dispatch's step for a connection just accepted: it checks its
// source and reads what it can now without waiting (its PROXY header, its
// key). What must wait goes to the peeker, off the accept loop. It
// returns the target picked, with the key if it is that key's slot's
// worker, or kept: the policy took the connection (waiting, held, or
// closed). peers[k] becomes the real client's address.
func (s *stickiness) first(h *Handoff, fd int, peers []ipc.Peer, k int, b *batch) (t *Target, hitKey string, kept bool) {
	var peer ipc.Peer
	if peers != nil {
		peer = peers[k]
	}
	proxy := s.cfg.Proxy && !b.again
	if proxy && !s.trusted(peer) {
		s.reject(fd)
		return nil, "", true
	}
	key, out := s.step(fd, &peer, &proxy, b.peek[:])
	if peers != nil {
		peers[k] = peer
	}
	switch out {
	case rejected:
		s.reject(fd)
		return nil, "", true
	case pending:
		if s.pk.add(fd, peer, proxy) {
			return nil, "", true
		}
		if proxy { // no room to wait for its header
			s.reject(fd)
			return nil, "", true
		}
		s.timeouts.Add(1) // no room to wait for its key
		key = ""
	}
	t, kept, hit := s.pickHit(h, key, fd, peer, true)
	if t == nil && !kept {
		t, _ = h.policy.Pick()
	}
	if !hit {
		key = ""
	}
	return t, key, t == nil && kept
}

// Claims are the keys workers claimed, for an in-place upgrade to keep;
// RestoreClaims, in the new image, claims them again.
func (h *Handoff) Claims() []sticky.Claim {
	if h == nil || h.st == nil || h.st.cfg.Table == nil {
		return nil
	}
	return h.st.cfg.Table.Claims()
}

func (h *Handoff) RestoreClaims(cs []sticky.Claim) {
	if h == nil || h.st == nil || h.st.cfg.Table == nil {
		return
	}
	for _, c := range cs {
		h.st.cfg.Table.Claim(c.Key, c.Slot)
	}
}

// successor is the ready worker of from's slot other than from (the one
// a reload routed in its place), or nil.
func (s *stickiness) successor(from *Target) *Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[from.slot]; sl != nil {
		if t := sl.ready(); t != nil && t != from {
			return t
		}
	}
	return nil
}

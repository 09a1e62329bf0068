package handoff

import "sync"

// Rebalancing: the supervisor asks busy workers to give idle connections
// back, and says which workers are under their share and by how much
// (Want). Those connections then go to those workers, not through the
// policy: round-robin would send half of them back to the busy workers,
// and rebalancing would take several rounds, a heartbeat apart, to
// converge.

// wants is how many connections handed back each target is still to get.
type wants struct {
	mu sync.Mutex
	n  map[*Target]int
}

// Want makes the next connections handed back go to the targets in want,
// each up to its count, the one missing the most first, before the policy
// picks again. A call replaces the previous wants; nil clears them. A nil
// Handoff ignores it.
func (h *Handoff) Want(want map[*Target]int) {
	if h == nil {
		return
	}
	n := make(map[*Target]int, len(want))
	for t, k := range want {
		if t != nil && k > 0 {
			n[t] = k
		}
	}
	h.wants.mu.Lock()
	h.wants.n = n
	h.wants.mu.Unlock()
}

// Wanted is how many connections handed back t is still to get.
func (h *Handoff) Wanted(t *Target) int {
	if h == nil {
		return 0
	}
	h.wants.mu.Lock()
	defer h.wants.mu.Unlock()
	return h.wants.n[t]
}

// pickBack picks the target of a connection handed back: the routed,
// available target that wants the most, else the policy's pick.
func (h *Handoff) pickBack() *Target {
	h.wants.mu.Lock()
	var best *Target
	if len(h.wants.n) > 0 {
		members := h.policy.Members()
		for _, t := range members {
			if k := h.wants.n[t]; k > 0 && t.Available() && (best == nil || k > h.wants.n[best]) {
				best = t
			}
		}
	}
	if best != nil {
		if h.wants.n[best]--; h.wants.n[best] == 0 {
			delete(h.wants.n, best)
		}
	}
	h.wants.mu.Unlock()
	if best != nil {
		return best
	}
	t, _ := h.policy.Pick()
	return t
}

// unwant forgets what t wanted: it leaves rotation.
func (h *Handoff) unwant(t *Target) {
	h.wants.mu.Lock()
	delete(h.wants.n, t)
	h.wants.mu.Unlock()
}

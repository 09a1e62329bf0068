package balancer

import "sync/atomic"

// RoundRobin is a Balancer that hands out its members in strict rotation.
//
// For sequential picks over a fixed set of n available members, every run
// of n picks returns each member exactly once. When members join or leave,
// rotation continues over the new set. Pick is O(1) while every member is
// available; an unavailable one costs one O(1) check.
//
// The zero value is an empty RoundRobin ready to use. A RoundRobin must not
// be copied after first use.
type RoundRobin[T Target] struct {
	m    members[T]
	next atomic.Uint64 // picks so far; the rotation position
}

// NewRoundRobin returns an empty RoundRobin.
func NewRoundRobin[T Target]() *RoundRobin[T] {
	return new(RoundRobin[T])
}

// Add makes t a member. Adding a member again has no effect.
func (r *RoundRobin[T]) Add(t T) { r.m.add(t) }

// Remove makes t no longer a member. Removing a non-member has no effect.
func (r *RoundRobin[T]) Remove(t T) { r.m.remove(t) }

// Len returns the number of members.
func (r *RoundRobin[T]) Len() int { return r.m.len() }

// Members returns the current members; do not modify the slice.
func (r *RoundRobin[T]) Members() []T { return r.m.load() }

// Pick returns the next available member in rotation, or false if there is
// none. An unavailable member's turn falls to the next available one.
func (r *RoundRobin[T]) Pick() (T, bool) {
	ts := r.m.load()
	if len(ts) == 0 {
		var zero T
		return zero, false
	}
	i := r.start(len(ts))
	for range ts {
		if t := ts[i]; t.Available() {
			return t, true
		}
		if i++; i == len(ts) {
			i = 0
		}
	}
	var zero T
	return zero, false
}

// start advances the rotation and returns the index, in a snapshot of n
// members, at which the pick begins. n must be positive.
func (r *RoundRobin[T]) start(n int) int {
	return int((r.next.Add(1) - 1) % uint64(n))
}

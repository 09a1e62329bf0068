package balancer

import (
	"slices"
	"sync/atomic"
)

// RoundRobin is a Balancer that hands out its members in strict rotation.
//
// For sequential picks over a fixed set of n members, every run of n picks
// returns each member exactly once. When members join or leave, rotation
// continues over the new set. Pick is O(1).
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

// Pick returns the next member in rotation, or false if there are none.
func (r *RoundRobin[T]) Pick() (T, bool) {
	ts := r.m.load()
	if len(ts) == 0 {
		var zero T
		return zero, false
	}
	return ts[r.start(len(ts))], true
}

// PickExcluding returns the next member in rotation that is not in
// excluded, or false if there is none. It is O(n·len(excluded)).
func (r *RoundRobin[T]) PickExcluding(excluded []T) (T, bool) {
	ts := r.m.load()
	if len(ts) == 0 {
		var zero T
		return zero, false
	}
	i := r.start(len(ts))
	for range ts {
		if t := ts[i]; !slices.Contains(excluded, t) {
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

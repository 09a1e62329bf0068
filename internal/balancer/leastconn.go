package balancer

import "sync/atomic"

// LeastConn is a Balancer that picks the member with the lowest Load.
//
// Each pick scans the members, keeping the first lowest load it sees,
// starting just after the member picked last. So members tied for the lowest
// load take turns, whether or not all members are tied: for sequential picks
// over members with constant loads, the counts of the least loaded members
// differ by at most one. Pick is O(n).
//
// Loads are read without locking while other goroutines may change them,
// so under concurrency a pick is the least loaded member as of its scan.
//
// The zero value is an empty LeastConn ready to use. A LeastConn must not be
// copied after first use.
type LeastConn[T Target] struct {
	m    members[T]
	next atomic.Uint64 // index just after the last pick; where scans start
}

// NewLeastConn returns an empty LeastConn.
func NewLeastConn[T Target]() *LeastConn[T] {
	return new(LeastConn[T])
}

// Add makes t a member. Adding a member again has no effect.
func (l *LeastConn[T]) Add(t T) { l.m.add(t) }

// Remove makes t no longer a member. Removing a non-member has no effect.
func (l *LeastConn[T]) Remove(t T) { l.m.remove(t) }

// Len returns the number of members.
func (l *LeastConn[T]) Len() int { return l.m.len() }

// Members returns the current members; do not modify the slice.
func (l *LeastConn[T]) Members() []T { return l.m.load() }

// Pick returns the least loaded available member, or false if there is
// none.
func (l *LeastConn[T]) Pick() (T, bool) {
	var (
		best     T
		bestLoad int64
		found    bool
	)
	ts := l.m.load()
	if len(ts) == 0 {
		return best, false
	}
	n := len(ts)
	i := int(l.next.Load() % uint64(n))
	next := 0
	for range n {
		if t := ts[i]; t.Available() {
			if load := t.Load(); !found || load < bestLoad {
				best, bestLoad, found = t, load, true
				next = i + 1
			}
		}
		if i++; i == n {
			i = 0
		}
	}
	if found {
		// Concurrent picks may read the same offset and pick the same
		// target; that costs only evenness among ties, which the picked
		// target's rising load corrects.
		l.next.Store(uint64(next))
	}
	return best, found
}

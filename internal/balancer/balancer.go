package balancer

import "fmt"

// Target is what the balancer hands connections to: a worker. Load reports
// its open connections. LeastConn uses it; RoundRobin ignores it.
// Available reports whether the target may be picked now: a member that
// cannot take a connection for a moment (its queue is full, it is paused)
// stays a member but is skipped. Both are called on every pick and must be
// O(1) and safe for concurrent use.
//
// Targets are compared with ==, so a Target is usually a pointer.
type Target interface {
	comparable
	Load() int64
	Available() bool
}

// Balancer picks a target from a changing set of members.
type Balancer[T Target] interface {
	// Add makes t a member. Adding a member again has no effect.
	Add(t T)

	// Remove makes t no longer a member. Removing a non-member has no
	// effect. No Pick starting after Remove returns will return t.
	Remove(t T)

	// Pick returns the next available target, or false if no member is
	// available. A target that failed a handoff is excluded from later
	// picks by making it unavailable, which costs O(1) per member scanned.
	Pick() (T, bool)

	// Len returns the number of members, available or not.
	Len() int

	// Members returns the current members. The slice is shared: do not
	// modify it.
	Members() []T
}

// Policies lists the policy names accepted by New, default first.
var Policies = []string{"round-robin", "least-conn"}

// New returns an empty balancer implementing the named policy, one of
// Policies.
func New[T Target](policy string) (Balancer[T], error) {
	switch policy {
	case "round-robin":
		return NewRoundRobin[T](), nil
	case "least-conn":
		return NewLeastConn[T](), nil
	default:
		return nil, fmt.Errorf("balancer: unknown policy %q", policy)
	}
}

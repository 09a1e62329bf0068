package balancer

import "fmt"

// Target is what the balancer hands connections to: a worker. Load reports
// its open connections. LeastConn uses it; RoundRobin ignores it.
//
// Targets are compared with ==, so a Target is usually a pointer.
type Target interface {
	comparable
	Load() int64
}

// Balancer picks a target from a changing set of members.
type Balancer[T Target] interface {
	// Add makes t a member. Adding a member again has no effect.
	Add(t T)

	// Remove makes t no longer a member. Removing a non-member has no
	// effect. No Pick starting after Remove returns will return t.
	Remove(t T)

	// Pick returns the next target, or false if there are no members.
	Pick() (T, bool)

	// PickExcluding is like Pick but never returns a target in excluded.
	// It returns false if every member is excluded. It is meant for
	// retrying after a failed handoff, with the targets already tried.
	PickExcluding(excluded []T) (T, bool)

	// Len returns the number of members.
	Len() int
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

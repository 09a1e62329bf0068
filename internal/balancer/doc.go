// Package balancer chooses which worker receives the next connection.
//
// The supervisor accepts TCP connections and hands each one to a worker
// process. A [Balancer] holds the current set of workers (its members) and
// picks one per connection. Two policies are provided:
//
//   - [RoundRobin] rotates strictly over the members, so while membership
//     is stable, over any run of sequential picks each member's count
//     differs from every other's by at most one.
//   - [LeastConn] picks the member reporting the lowest [Target.Load],
//     breaking ties by rotation so equally loaded members share evenly.
//
// A member that cannot take a connection for a moment reports
// [Target.Available] false and is skipped, without leaving the set.
//
// Both are safe for concurrent use: any number of goroutines may call Pick
// while others call Add and Remove. Picks never block and
// never allocate. They read an immutable snapshot of the members published
// through an atomic pointer; Add and Remove copy the snapshot, change the
// copy and publish it, serialized by a mutex. Once Remove returns, no Pick
// that starts afterwards returns the removed target.
//
// The zero values of RoundRobin and LeastConn are empty balancers ready to
// use. Use [New] to choose a policy by name, for example from a flag whose
// allowed values are listed in [Policies].
package balancer

package cluster

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Shedding silent connections under descriptor pressure.
//
// Clients that connect and send nothing (a flood of idle connections, a
// slowloris opening, a balancer's pre-opened sockets) can hold every
// descriptor a worker has. A new client then waits in the kernel's backlog,
// or the supervisor's queue, behind all of them until the server's header
// timeout closes them a batch at a time. So, as nginx reuses its idle
// connections when worker_connections run out, a worker at its limit closes
// connections that have sent nothing for shedAfter, oldest first, enough to
// take connections again: a real HTTP client sends its request right after
// connecting. A connection that has sent anything is never shed.
const (
	// shedAfter is how long a connection must have been silent to be shed.
	shedAfter = 250 * time.Millisecond
	// shedBatch is how many an accept out of descriptors sheds at most
	// (shared, reuseport), nginx's number: enough that the backlog moves
	// without a shed per accept.
	shedBatch = 32
)

// Connection states for shedding (handedConn.state). The zero value is
// silent: nothing read yet.
const (
	connSilent uint32 = iota
	connHeard         // Read returned bytes, or the connection is closed
	connShed          // closed by shed
)

// silentSet holds the connections a worker accepted that have not sent a
// byte, in accept order. Registering costs an uncontended lock; leaving it
// (the first Read that returns bytes, or Close) is one compare-and-swap on
// the connection, and the entry is dropped later by a sweep or when the
// slice fills. Nothing runs unless a worker is under pressure.
type silentSet struct {
	mu    sync.Mutex
	q     []*handedConn // accept order; entries no longer silent are dropped lazily
	total atomic.Uint64 // connections shed
}

// add registers c, which has sent nothing yet; c.since is when it was
// accepted.
func (s *silentSet) add(c *handedConn) {
	s.mu.Lock()
	if len(s.q) == cap(s.q) {
		s.compact()
	}
	s.q = append(s.q, c)
	s.mu.Unlock()
}

// compact drops the entries that are no longer silent into a new slice
// with room for as many again, so that it runs once per that many adds.
// Called with mu held.
func (s *silentSet) compact() {
	n := 0
	for _, c := range s.q {
		if c.state.Load() == connSilent {
			n++
		}
	}
	q := make([]*handedConn, 0, max(64, 2*n))
	for _, c := range s.q {
		if c.state.Load() == connSilent {
			q = append(q, c)
		}
	}
	s.q = q
}

// shed closes up to n connections that have sent nothing since before
// cutoff (accepted then, and no byte read or waiting to be read), oldest
// first. It returns how many it closed and, if silent connections remain,
// when the oldest of them was accepted (zero: none remain).
func (s *silentSet) shed(n int, cutoff time.Time) (int, time.Time) {
	var victims []*handedConn
	s.mu.Lock()
	i := 0
	for ; i < len(s.q) && len(victims) < n; i++ {
		c := s.q[i]
		if c.state.Load() != connSilent {
			continue
		}
		if c.since.After(cutoff) {
			break // and so are those after it
		}
		if !c.quiet() {
			// Its bytes arrived but the application has not read them
			// yet: it spoke.
			c.state.CompareAndSwap(connSilent, connHeard)
			continue
		}
		// A Read that returns bytes from now on loses this race and the
		// client sees a close, as if it had sent them a moment later.
		if c.state.CompareAndSwap(connSilent, connShed) {
			victims = append(victims, c)
		}
	}
	for i < len(s.q) && s.q[i].state.Load() != connSilent {
		i++
	}
	clear(s.q[:i])
	s.q = s.q[i:]
	var next time.Time
	if len(s.q) > 0 {
		next = s.q[0].since
	}
	s.mu.Unlock()
	// Outside the lock: Close updates the pause gate. It returns once the
	// descriptor is closed, even with a Read blocked on it (os.File waits
	// for that Read to let go), so the room is there when shed returns.
	for _, c := range victims {
		c.Close()
	}
	s.total.Add(uint64(len(victims)))
	return len(victims), next
}

// quiet reports whether no byte waits in c's receive queue. A closed
// connection is not quiet: it is not for shed to close.
func (c *handedConn) quiet() bool {
	queued := 0
	err := c.control(func(fd int) error {
		// SIOCINQ: bytes received and not yet read. A client that closed
		// without sending has none, and is shed like any silent one.
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		queued = n
		return err
	})
	return err == nil && queued == 0
}

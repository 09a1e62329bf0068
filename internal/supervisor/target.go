package supervisor

import (
	"sync/atomic"

	"github.com/prefork/prefork/internal/ipc"
)

// target is a worker as the handoff path sees it: the supervisor's end of
// the worker's handoff channel and its connection counts. It is what the
// balancer picks.
type target struct {
	slot int
	ch   *ipc.Channel // supervisor's end: send accepted connections here
	// keep is a duplicate of the worker's end of the handoff channel. While
	// the supervisor holds it, connections queued for the worker survive
	// the worker's death, and recover reads them back out.
	keep *ipc.Channel

	handed atomic.Uint64 // connections sent
	peers  atomic.Bool   // the worker takes peer addresses in conns frames
	closed atomic.Uint32 // connections the worker reports closed, wrapping
}

// Load is the worker's open connections: sent minus closed. The worker's
// count wraps at 2^32, so the difference is taken in 32 bits.
func (t *target) Load() int64 { return int64(int32(uint32(t.handed.Load()) - t.closed.Load())) }

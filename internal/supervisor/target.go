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
	pid  int
	ch   *ipc.Channel // supervisor's end: send accepted connections here
	// keep is a duplicate of the worker's end of the handoff channel. While
	// the supervisor holds it, connections queued for the worker survive
	// the worker's death, and recover reads them back out.
	keep *ipc.Channel

	handed atomic.Uint32 // connections sent, wrapping
	closed atomic.Uint32 // connections the worker reports closed, wrapping
	total  atomic.Uint64 // connections sent, for metrics
}

// Load is the worker's open connections: sent minus closed. Both counters
// wrap at 2^32; their difference does not.
func (t *target) Load() int64 { return int64(int32(t.handed.Load() - t.closed.Load())) }

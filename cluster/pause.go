package cluster

import (
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// Back-pressure (rr mode, when the supervisor offers ipc.FeaturePause).
//
// A worker that runs out of descriptors loses connections: the kernel
// installs what fits of a conns frame and closes the rest (MSG_CTRUNC). So a
// worker close to RLIMIT_NOFILE asks the supervisor to stop sending
// (ipc.TypePause), and to start again (ipc.TypeResume) once it has room.
const (
	// pauseMargin is how many descriptors a worker keeps free below its
	// limit: two full frames (one the supervisor may send before it reads
	// the pause, one already queued), and headroom for what the
	// application opens itself (files, outgoing connections).
	pauseMargin = 2*ipc.MaxFDs + pauseHeadroom
	// pauseHeadroom is what a paused worker keeps free for the application:
	// it takes another frame only if a full one fits above it.
	pauseHeadroom = 32
	// resumeGap is the hysteresis: a paused worker resumes once a full
	// frame's worth of connections has closed, not at the first close.
	resumeGap = ipc.MaxFDs
)

// pauseGate decides when to pause and resume. It counts open descriptors
// from the worker's accepted and closed counters plus a baseline measured
// once at start, never by scanning /proc per connection: the application's
// own descriptors beyond the baseline are what the margin's headroom is for.
//
// Its methods run on Accept's goroutine (a frame arrived) and on any
// goroutine that closes a connection. mu orders each decision with its
// frame, so that the supervisor sees Pause and Resume alternate as the
// worker decided them; paused is read without it on the fast path.
type pauseGate struct {
	high, low int        // pause at high open descriptors or more, resume at low or fewer
	top       int        // paused, receive a frame only if it fits at or below top
	conns     func() int // connections open: accepted minus closed
	send      func(ipc.Type) error
	pressed   func() // called after a pause is sent; nil for nothing

	mu     sync.Mutex
	paused atomic.Bool
	room   chan struct{} // capacity 1: a connection closed at high or above
}

// newPauseGate returns w's gate, or nil (no back-pressure) when the limit
// leaves too little room to be worth pausing for.
func newPauseGate(w *worker) *pauseGate {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil
	}
	base, err := openFDs()
	if err != nil {
		return nil
	}
	high, low, ok := pauseLevels(rl.Cur, base)
	if !ok {
		fmt.Fprintf(os.Stderr, "cluster: RLIMIT_NOFILE %d leaves no room for back-pressure (%d open); not pausing\n", rl.Cur, base)
		return nil
	}
	frames := map[ipc.Type][]byte{}
	for _, t := range []ipc.Type{ipc.TypePause, ipc.TypeResume} {
		frames[t], _ = ipc.AppendFrame(nil, t, nil)
	}
	return &pauseGate{
		high:  high - base,
		low:   low - base,
		top:   high + 2*ipc.MaxFDs - base, // the limit less the headroom
		room:  make(chan struct{}, 1),
		conns: func() int { return int(w.accepted.Load() - w.closed.Load()) },
		send:  func(t ipc.Type) error { return w.ctl.Send(frames[t], nil) },
		// run sheds silent connections while paused.
		pressed: func() { poke(w.pressure) },
	}
}

// pauseLevels returns the descriptor counts at which to pause and resume
// for a soft limit and the descriptors open at start; ok is false when the
// worker would be paused with no connection open.
func pauseLevels(limit uint64, baseline int) (high, low int, ok bool) {
	limit = min(limit, math.MaxInt32) // RLIM_INFINITY
	high = int(limit) - pauseMargin
	low = high - resumeGap
	return high, low, low > baseline
}

// decide returns the frame to send, if any, for the state paused with open
// connections.
func (g *pauseGate) decide(paused bool, open int) (ipc.Type, bool) {
	switch {
	case !paused && open >= g.high:
		return ipc.TypePause, true
	case paused && open <= g.low:
		return ipc.TypeResume, true
	}
	return 0, false
}

// update sends Pause or Resume if the open connections, plus pending ones
// received but not yet accepted, call for it. A frame that cannot be sent
// (the supervisor's queue is full) leaves the state as it was, so the next
// update tries again. A nil gate does nothing.
func (g *pauseGate) update(pending int) {
	if g == nil {
		return
	}
	open := g.conns() + pending
	if open >= g.high {
		poke(g.room) // perhaps a close: waitRoom looks again
	}
	if _, ok := g.decide(g.paused.Load(), open); !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	paused := g.paused.Load()
	t, ok := g.decide(paused, g.conns()+pending)
	if !ok || g.send(t) != nil {
		return
	}
	g.paused.Store(!paused)
	if t == ipc.TypePause && g.pressed != nil {
		g.pressed()
	}
}

// waitRoom returns once the worker has room for a full frame (see top),
// pausing it if it is not paused yet. The supervisor may have queued many
// frames before it read the pause, and a frame received without room loses
// what does not fit (MSG_CTRUNC); those left queued wait for closes here,
// or for the supervisor to read them back for another worker. It returns
// false if stop or closed is closed first. A nil gate never waits.
func (g *pauseGate) waitRoom(stop, closed <-chan struct{}) bool {
	for g != nil && g.conns()+ipc.MaxFDs > g.top {
		g.update(0)
		select {
		case <-g.room:
		case <-stop:
			return false
		case <-closed:
			return false
		}
	}
	return true
}

// openFDs counts this process's open descriptors, once, at start.
func openFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(ents) - 1, nil // less the one ReadDir had open
}

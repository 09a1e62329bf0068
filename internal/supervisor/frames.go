package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
)

// Limits on what one worker's control channel can make the supervisor do.
const (
	// maxProtocolErrors: a worker that sends this many frames that break
	// the worker protocol is replaced.
	maxProtocolErrors = 64
	// A worker beats once a second; beats past beatBurst, then beatRate a
	// second, are dropped rather than cost the owner a /proc read each.
	beatBurst = 10
	beatRate  = 10
	// A systemd worker's notify datagrams past dgramBurst, then
	// dgramRate a second, are dropped: sd_notify is fire-and-forget.
	dgramBurst = 100
	dgramRate  = 100
)

// read forwards a worker's frames to the owner goroutine until the
// channel closes. Load frames, the hot ones, update the target directly.
// It is the first line of defence against a worker that breaks the
// protocol: descriptors a control frame carries are closed (Recv closes
// what it is not asked for), and malformed frames and message floods are
// counted here and reach the owner boundedly. Messages are read no faster
// than the owner (and an Engine's reader) takes them: see passMessage.
func (l *preforkLink) read(s *Supervisor, p *process) {
	buf := make([]byte, ipc.MaxFrame)
	var fds []int
	g := newGuard()
	recv := p.ctl.Recv
	for {
		f, got, err := recv(buf, fds[:0])
		// A worker sends no descriptors on its control channel: whatever
		// came is closed here, or each would stay open in the supervisor.
		ipc.CloseAll(got)
		fds = got
		if err == nil && len(got) > 0 {
			err = fmt.Errorf("supervisor: %d descriptors on a worker's control channel", len(got))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The worker has exited (see lastWords): read what it sent
			// before, without waiting for an EOF that a duplicate of its
			// end (reuseport's keep) would hold back.
			recv = p.ctl.TryRecv
			continue
		}
		if gone(err) {
			return
		}
		if err == nil {
			err = l.onFrame(s, p, f, g)
		}
		if err == nil {
			continue
		}
		if g.broke(s, p, err) {
			return
		}
	}
}

// gone reports whether err from reading a worker's control channel means
// the worker is gone. ECONNRESET: it exited and left frames unread; Recv
// wraps it in a *net.OpError, TryRecv (after the exit) does not.
func gone(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, ipc.ErrWouldBlock) ||
		errors.As(err, &op) || errors.Is(err, syscall.ECONNRESET)
}

// guard is what a worker's reader, whatever its protocol, holds against
// the worker: its protocol errors, and a bucket for its beats.
type guard struct {
	bad   int
	beats *bucket
}

func newGuard() *guard { return &guard{beats: newBucket(beatBurst, beatRate, time.Now())} }

// broke counts one of p's protocol errors, on its reader's goroutine. A
// message that breaks the protocol is the worker's bug: it loses the
// supervisor nothing. The owner hears of it at powers of two; broke
// reports true once the worker is to be replaced, and its reader stops
// listening.
func (g *guard) broke(s *Supervisor, p *process, err error) bool {
	g.bad++
	if n := g.bad; n&(n-1) == 0 || n == maxProtocolErrors {
		s.post(evProtocol{p: p, err: err, count: n})
	}
	return g.bad >= maxProtocolErrors
}

// onFrame handles one well-formed frame on the reader's goroutine.
func (l *preforkLink) onFrame(s *Supervisor, p *process, f ipc.Frame, g *guard) error {
	switch f.Type {
	case ipc.TypeReady:
		if p.t != nil && f.Features()&ipc.FeaturePeers != 0 {
			p.t.TakesPeers() // before the owner adds it to the balancer
			if f.Features()&ipc.FeatureListeners != 0 {
				p.t.TakesListeners()
			}
		}
		if f.Features()&ipc.FeatureHandBack != 0 {
			s.mode.handoff().Receive(p.t) // what it hands back when it drains
		}
		s.post(evReady{p: p, uses: f.Features()})
	case ipc.TypeHeartbeat:
		if g.beats.take(time.Now()) {
			s.post(evBeat{p: p, hb: f.Heartbeat()})
		}
	case ipc.TypeLoad:
		if p.t != nil {
			p.t.Closed(f.Uint32())
		}
	case ipc.TypePause, ipc.TypeResume:
		s.mode.handoff().Pause(p.t, f.Type == ipc.TypePause)
	case ipc.TypeMessage:
		s.messages.passMessage(p, f.Payload)
	case ipc.TypeLeave:
		s.post(evLeaving{p: p})
	case ipc.TypeClaim:
		// Here, not through the owner: the client's next request may be
		// on its way already (handoff.Claim is safe for concurrent use).
		s.mode.handoff().Claim(string(f.Payload), p.slot.id)
		claimed, _ := ipc.AppendFrame(nil, ipc.TypeClaimed, nil)
		l.ctl.Send(claimed, nil) // cluster.Claim returns: the client may have the key now
	default:
		return fmt.Errorf("supervisor: unexpected %s frame from a worker", f.Type)
	}
	return nil
}

// onProtocol counts a worker's protocol errors and replaces a worker that
// keeps making them.
func (s *Supervisor) onProtocol(p *process, err error, count int) {
	s.counts.protocol++
	if s.live[p.pid] != p {
		return
	}
	s.log.Warn("worker broke the worker protocol", p.fields(zap.Error(err), zap.Int("count", count))...)
	s.emit(p, control.Event{Kind: control.EventProtocol, Error: err.Error(), Count: count})
	if count < maxProtocolErrors || p.asked {
		return
	}
	s.log.Error("replacing a worker that keeps breaking the protocol", p.fields(zap.Int("limit", maxProtocolErrors))...)
	s.health.replace(p, control.CauseProtocol)
}

// bucket is a token bucket: burst at once, then rate a second.
type bucket struct {
	tokens, burst, rate float64
	at                  time.Time
	dropped             uint64
}

func newBucket(burst, rate int, now time.Time) *bucket {
	return &bucket{tokens: float64(burst), burst: float64(burst), rate: float64(rate), at: now}
}

// take reports whether one more may pass at now.
func (b *bucket) take(now time.Time) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if b.tokens < 1 {
		b.dropped++
		return false
	}
	b.tokens--
	return true
}

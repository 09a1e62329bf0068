package supervisor

import (
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

// Rebalancing (rr, -rebalance): long-lived keep-alive clients stay on the
// workers they first reached, so after a scale-up or a respawn the new
// workers get nothing until clients reconnect. On a tick the owner asks
// each ready worker holding more than one connection over an even share
// to give that many idle ones back (ipc.TypeGiveBack), and has the
// handoff place them on the workers under that share (Handoff.Want), so
// that one round is enough when the workers are idle between requests.
//
// A round is taken only on counts that have seen the previous one: with
// least-conn they are the handoff's own, exact once the workers' load
// reports arrive; with round-robin a worker's count is its last
// heartbeat's, plus what the handoff sent it since, less what it handed
// back since (openConns). Either way rounds are rebalanceSettle apart at
// least, and a worker asked is not asked again within rebalanceAgain: the
// connections busy when asked leave after their answer.
// While a worker is starting (a scale-up, a respawn, a reload) no round
// is taken: its share would be counted too soon. A round asks for at most
// rebalanceBatch connections in all, and rounds are a tick apart at
// least: at most a few hundred moves a second.
const (
	rebalanceSettle = 100 * time.Millisecond
	rebalanceAgain  = 500 * time.Millisecond
	rebalanceBatch  = 128
)

// rebalance runs on the owner's tick.
func (s *Supervisor) rebalance(now time.Time) {
	if !s.cfg.Rebalance || s.cfg.Sticky != "" {
		return // with -sticky a connection stays on its key's slot
	}
	if _, ok := s.mode.(*rr); !ok {
		return
	}
	h := s.mode.handoff()
	if now.Sub(s.rebalancedAt) < max(rebalanceSettle, tickEvery-tickEvery/10) {
		return
	}
	var ready []*process
	var total int64
	for _, p := range s.live {
		if p.state == control.StateStarting {
			return
		}
		if p.state != control.StateReady || p.uses&ipc.FeatureHandBack == 0 || p.ctl == nil || !h.Routed(p.t) {
			continue
		}
		ready = append(ready, p)
		total += s.openConns(p)
	}
	if len(ready) < 2 {
		return
	}
	even := total / int64(len(ready))
	want := map[*handoff.Target]int{}
	budget := int64(rebalanceBatch)
	var asks []*process
	for _, p := range ready {
		if open := s.openConns(p); open < even {
			want[p.t] = int(even - open)
		} else if open-even-1 > 0 && now.Sub(p.askedAt) >= rebalanceAgain {
			asks = append(asks, p)
		}
	}
	if len(asks) == 0 {
		return
	}
	h.Want(want) // before the first connection comes back
	s.rebalancedAt = now
	for _, p := range asks {
		open := s.openConns(p)
		n := min(open-even-1, budget)
		if n <= 0 {
			break
		}
		if err := p.ctl.Send(ipc.AppendUint32(nil, ipc.TypeGiveBack, uint32(n)), nil); err != nil {
			continue // its queue is full: next round
		}
		budget -= n
		p.askedAt = now
		s.counts.rebalanceAsks += uint64(n)
		s.log.Debug("rebalancing: asked a worker for idle connections", zap.Int("slot", p.slot.id),
			zap.Int64("connections", n), zap.Int64("open", open), zap.Int64("even", even))
	}
}

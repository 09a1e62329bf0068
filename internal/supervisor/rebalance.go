package supervisor

import (
	"cmp"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

// Rebalancing (rr, -rebalance): long-lived keep-alive clients stay on the
// workers they first reached, so after a scale-up or a respawn the new
// workers get nothing until clients reconnect. While two ready workers
// hold more than one connection apart, on a tick the owner asks each
// worker over its share (total/n, one more for the busiest total%n) to
// give the difference back (ipc.TypeGiveBack), and has the handoff place
// what comes back on the workers under their share (Handoff.Want): one
// round is enough.
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
	// Each worker's share: total/n, and one more for the busiest
	// total%n, so that no connection moves for a remainder. A round runs
	// only while two workers are more than one apart.
	slices.SortFunc(ready, func(a, b *process) int { return cmp.Compare(s.openConns(b), s.openConns(a)) })
	even, rem := total/int64(len(ready)), total%int64(len(ready))
	if s.openConns(ready[0])-s.openConns(ready[len(ready)-1]) <= 1 {
		return
	}
	want := map[*handoff.Target]int{}
	budget := int64(rebalanceBatch)
	type ask struct {
		p *process
		n int64
	}
	var asks []ask
	for i, p := range ready {
		share := even
		if int64(i) < rem {
			share++
		}
		if open := s.openConns(p); open < share {
			want[p.t] = int(share - open)
		} else if open > share && now.Sub(p.askedAt) >= rebalanceAgain {
			asks = append(asks, ask{p, open - share})
		}
	}
	if len(asks) == 0 {
		return
	}
	h.Want(want) // before the first connection comes back
	s.rebalancedAt = now
	for _, a := range asks {
		p, open := a.p, s.openConns(a.p)
		n := min(a.n, budget)
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
			zap.Int64("connections", n), zap.Int64("open", open), zap.Int64("share", open-a.n))
	}
}

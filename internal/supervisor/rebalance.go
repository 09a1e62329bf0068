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
// is taken: its share would be counted too soon. The connections of a
// worker draining with hand-back count in the total: they are on their way
// back, and fill the shares without anyone being asked (planRebalance). A round asks for at most
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
	var coming int64 // held by draining workers, all coming back
	for _, p := range s.live {
		if p.state == control.StateStarting {
			return
		}
		if p.uses&ipc.FeatureHandBack == 0 || p.t == nil {
			continue
		}
		if p.state == control.StateDraining {
			coming += max(0, s.openConns(p))
			continue
		}
		if p.state != control.StateReady || p.ctl == nil || !h.Routed(p.t) {
			continue
		}
		ready = append(ready, p)
	}
	slices.SortFunc(ready, func(a, b *process) int { return cmp.Compare(s.openConns(b), s.openConns(a)) })
	members := make([]rebalanceMember, len(ready))
	for i, p := range ready {
		members[i] = rebalanceMember{open: s.openConns(p), askable: now.Sub(p.askedAt) >= rebalanceAgain}
	}
	plan := planRebalance(members, coming)
	if len(plan.asks) == 0 && coming == 0 {
		return
	}
	want := map[*handoff.Target]int{}
	for i, n := range plan.want {
		want[ready[i].t] = int(n)
	}
	h.Want(want) // before the first connection comes back
	if len(plan.asks) == 0 {
		return // the draining workers' connections fill the shares
	}
	s.rebalancedAt = now
	budget := int64(rebalanceBatch)
	for _, a := range plan.asks {
		p, open := ready[a.i], members[a.i].open
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

// rebalanceMember is a ready worker in a round: its open connections, and
// whether it may be asked (not asked within rebalanceAgain).
type rebalanceMember struct {
	open    int64
	askable bool
}

// rebalancePlan is what a round does, by index into its members: how
// many connections handed back each is to get, and whom to ask for how
// many, in order.
type rebalancePlan struct {
	want map[int]int64
	asks []rebalanceAsk
}

type rebalanceAsk struct{ i, n int64 }

// planRebalance decides a round for members, sorted busiest first, when
// coming connections are on their way back from draining workers (a
// reload's, or one still draining when a scale-up begins). Those count in
// the total: they go to the members under their share, so asking a
// member for connections that the drain is about to bring would only move
// them twice, and mark it asked for the round that counts. Each member's
// share is total/n, and one more for the busiest total%n, so that no
// connection moves for a remainder; without coming connections a round
// runs only while two members are more than one apart.
func planRebalance(members []rebalanceMember, coming int64) rebalancePlan {
	var plan rebalancePlan
	if len(members) < 2 && (len(members) == 0 || coming == 0) {
		return plan
	}
	total := coming
	for _, m := range members {
		total += m.open
	}
	if coming == 0 && members[0].open-members[len(members)-1].open <= 1 {
		return plan
	}
	n := int64(len(members))
	even, rem := total/n, total%n
	plan.want = map[int]int64{}
	for i, m := range members {
		share := even
		if int64(i) < rem {
			share++
		}
		if m.open < share {
			plan.want[i] = share - m.open
		} else if m.open > share && m.askable {
			plan.asks = append(plan.asks, rebalanceAsk{int64(i), m.open - share})
		}
	}
	return plan
}

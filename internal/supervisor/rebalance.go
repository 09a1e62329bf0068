package supervisor

import (
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
)

// Rebalancing (rr, -rebalance): long-lived keep-alive clients stay on the
// workers they first reached, so after a scale-up or a respawn the new
// workers get nothing until clients reconnect. On every tick the owner
// asks each ready worker holding more than one connection over an even
// share to give that many idle ones back (ipc.TypeGiveBack); the handoff
// places them as it places new connections. A worker is asked at most once
// per rebalanceEvery, its heartbeat's period, so that the count it is
// asked on has seen the last round, and for at most rebalanceBatch at a
// time: a few hundred moves a second in all.
const (
	rebalanceEvery = time.Second
	rebalanceBatch = 128
)

// rebalance runs on the owner's tick.
func (s *Supervisor) rebalance(now time.Time) {
	if !s.cfg.Rebalance {
		return
	}
	if _, ok := s.mode.(*rr); !ok {
		return
	}
	h := s.mode.handoff()
	var ready []*process
	var total int64
	for _, p := range s.live {
		if p.state == control.StateReady && p.uses&ipc.FeatureHandBack != 0 && p.ctl != nil && h.Routed(p.t) {
			ready = append(ready, p)
			total += s.openConns(p)
		}
	}
	if len(ready) < 2 {
		return
	}
	even := total / int64(len(ready))
	for _, p := range ready {
		excess := s.openConns(p) - even - 1
		if excess <= 0 || now.Sub(p.askedAt) < rebalanceEvery {
			continue
		}
		n := min(excess, rebalanceBatch)
		if err := p.ctl.Send(ipc.AppendUint32(nil, ipc.TypeGiveBack, uint32(n)), nil); err != nil {
			continue // its queue is full: next round
		}
		p.askedAt = now
		s.counts.rebalanceAsks += uint64(n)
		s.log.Debug("rebalancing: asked a worker for idle connections", zap.Int("slot", p.slot.id),
			zap.Int64("connections", n), zap.Int64("open", s.openConns(p)), zap.Int64("even", even))
	}
}

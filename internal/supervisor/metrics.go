package supervisor

import (
	"maps"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/metrics"
)

type snapshot = metrics.Snapshot

// snapshot reports the supervisor's state for a metrics scrape.
func (s *Supervisor) snapshot() snapshot {
	snap := snapshot{
		StateCounts:    map[control.State]int{},
		Spawns:         maps.Clone(s.counts.spawns),
		Exits:          maps.Clone(s.counts.exits),
		Reloads:        maps.Clone(s.counts.reloads),
		CanaryVerdicts: maps.Clone(s.counts.verdicts),
		CanaryBaking:   s.reloader.baking(),
		Handoffs:       map[int]uint64{},

		ProtocolErrors: s.counts.protocol,
		Freezes:        s.counts.freezes,
	}
	now := s.sys.Now()
	for _, sl := range s.slots {
		snap.Handoffs[sl.id] += sl.handedPast
	}
	for _, p := range s.live {
		snap.StateCounts[p.state]++ // s.live holds no exited process
		snap.Workers = append(snap.Workers, metrics.Worker{Slot: p.slot.id, OpenConns: s.openConns(p),
			Requests: p.beat.Requests, RSSBytes: p.beat.RSS, HeartbeatAge: p.heartbeatAge(now), Latency: p.beat.Latency})
		if p.t != nil {
			snap.Handoffs[p.slot.id] += p.t.Handed()
		}
	}
	if a, ok := s.mode.(interface{ accepted() map[string]uint64 }); ok {
		snap.Accepted = a.accepted()
	}
	st := s.mode.handoff().Stats()
	snap.HandoffFailures, snap.Reroutes, snap.Dropped, snap.PendingDepth = st.Failures, st.Reroutes, st.Dropped, st.Pending
	snap.HandedBack, snap.Unplaced, snap.RebalanceAsks = st.HandedBack, st.Unplaced, s.counts.rebalanceAsks
	snap.Sticky = stickySnapshot(s.mode.handoff(), s.cfg)
	return snap
}

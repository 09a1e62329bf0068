package supervisor

import (
	"context"
	"maps"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/metrics"
)

type snapshot = metrics.Snapshot

// serveMetrics starts the Prometheus listener (-metrics). Scrapes ask the
// owner goroutine for a snapshot, so the numbers agree with each other.
func (s *Supervisor) serveMetrics() (func(), error) {
	m := metrics.New(func(ctx context.Context) (snapshot, error) {
		return ask(ctx, s, func(reply chan snapshot) any { return evSnapshot{reply: reply} })
	})
	if s.handoff != nil {
		s.handoff.obs = m
	}
	srv, err := metrics.Serve(s.cfg.Metrics, m, s.log.Named("metrics"))
	if err != nil {
		return nil, err
	}
	s.log.Info("metrics", zap.String("addr", "http://"+srv.Addr()+"/metrics"))
	return func() { srv.Close() }, nil
}

// snapshot reports the supervisor's state for a metrics scrape.
func (s *Supervisor) snapshot() snapshot {
	snap := snapshot{
		StateCounts: map[control.State]int{},
		Spawns:      maps.Clone(s.spawnCauses),
		Exits:       maps.Clone(s.exitCauses),
		Reloads:     maps.Clone(s.reloads),
		Handoffs:    map[int]uint64{},
	}
	now := time.Now()
	for _, sl := range s.slots {
		snap.Handoffs[sl.id] += sl.handedPast
	}
	for _, p := range s.live {
		snap.StateCounts[control.State(p.state.String())]++ // s.live holds no exited process
		snap.Workers = append(snap.Workers, metrics.Worker{Slot: p.slot.id, OpenConns: s.openConns(p),
			Requests: p.beat.Requests, RSSBytes: p.beat.RSS, HeartbeatAge: p.heartbeatAge(now)})
		if p.t != nil {
			snap.Handoffs[p.slot.id] += p.t.handed.Load()
		}
	}
	if h := s.handoff; h != nil {
		snap.HandoffFailures = h.failures.Load()
		snap.Reroutes = h.retried.Load() + h.recovered.Load()
		snap.Dropped = h.dropped.Load()
		snap.PendingDepth = int(h.npend.Load())
	}
	return snap
}

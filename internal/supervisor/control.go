package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// handler serves control requests by passing them to the owner goroutine.
type handler struct{ s *Supervisor }

func (h handler) Do(ctx context.Context, req control.Request) control.Response {
	if req.Cmd == control.CmdUpgrade {
		return h.s.up.requestUpgrade(ctx, req.Path, true)
	}
	r, err := ask(ctx, h.s, func(reply chan control.Response) any { return evControl{req: req, reply: reply} })
	if err != nil {
		return control.Response{Error: err.Error()}
	}
	return r
}

// errStopped is what a question to a supervisor that has stopped gets.
var errStopped = errors.New("supervisor has stopped")

// ask posts the event made by ev to the owner goroutine and waits for its
// reply, or for ctx, or for the supervisor to stop.
func ask[T any](ctx context.Context, s *Supervisor, ev func(reply chan T) any) (T, error) {
	var zero T
	reply := make(chan T, 1)
	select {
	case s.asks <- ev(reply):
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-s.done:
		return zero, errStopped
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-s.done:
		return zero, errStopped
	}
}

func (s *Supervisor) onControl(req control.Request, reply chan control.Response) {
	switch req.Cmd {
	case control.CmdStatus:
		respond(reply, control.Response{OK: true, Status: s.status()})
	case control.CmdReload:
		s.log.Info("reload requested over the control socket")
		s.reloader.requestReload(reply, req)
	case control.CmdScale:
		s.scaler.scale(req.N, reply)
	case control.CmdStop:
		s.log.Info("stop requested over the control socket")
		s.beginStop(nil)
		respond(reply, control.Response{OK: true, Message: "stopping"})
	default:
		respond(reply, control.Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
	}
}

func (s *Supervisor) status() *control.Status {
	now := s.sys.Now()
	var lns []string
	if ls := s.mode.listeners(); len(ls) > 1 {
		for _, l := range ls {
			lns = append(lns, l.name+"="+l.addr)
		}
	}
	st := &control.Status{
		Listeners:   lns,
		PID:         os.Getpid(),
		Listen:      addrOf(s.mode),
		Mode:        s.cfg.Mode,
		Generation:  s.gen,
		UptimeS:     now.Sub(s.begun).Seconds(),
		Version:     Version,
		Upgrades:    s.up.upgrades,
		AcceptGapMS: float64(s.up.acceptGap.Microseconds()) / 1000,
		Canary:      s.reloader.canaryStatus(),
	}
	for _, p := range s.live {
		perSec, lat, _ := p.recent.figures(p.started)
		st.Workers = append(st.Workers, control.WorkerStatus{
			Slot:          p.slot.id,
			PID:           p.pid,
			Generation:    p.gen,
			State:         p.state,
			UptimeS:       p.uptime(now).Seconds(),
			Restarts:      p.slot.restarts,
			OpenConns:     s.openConns(p),
			Requests:      p.beat.Requests,
			RSSBytes:      p.beat.RSS,
			CPUPercent:    p.cpuPct,
			HeartbeatAgeS: p.heartbeatAge(now).Seconds(),
			Features:      p.features(),
			RequestsPerS:  perSec,
			P50S:          lat.Quantile(0.5).Seconds(),
			P99S:          lat.Quantile(0.99).Seconds(),
			StatusClasses: statusClasses(p.beat.Outcomes),
		})
	}
	if h := s.mode.handoff(); h != nil && (s.cfg.Sticky != "" || s.cfg.ProxyProtocol) {
		st.Sticky = stickyStatus(h, st.Workers)
	}
	slices.SortFunc(st.Workers, func(a, b control.WorkerStatus) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.PID - b.PID
	})
	return st
}

// openConns is p's open connections: exact from the handoff counts when
// workers report closes (least-conn), else p's last heartbeat's, plus those
// the handoff sent it since, less those it handed back since (before its
// first heartbeat: all of them).
func (s *Supervisor) openConns(p *process) int64 {
	if p.t != nil && s.mode.handoff().LoadReports() {
		return p.t.Load()
	}
	n := int64(p.beat.Conns)
	if p.t != nil {
		n += int64(p.t.Handed()-p.beatHanded) - int64(p.t.HandedBack()-p.beatBack)
	}
	return n
}

// features is what p announced in its ready frame; "" before.
func (p *process) features() string {
	if p.readyAt.IsZero() {
		return ""
	}
	return p.uses.String()
}

// heartbeatAge is the time since p's last heartbeat; -1s before the first.
func (p *process) heartbeatAge(now time.Time) time.Duration {
	if p.beatAt.IsZero() {
		return -time.Second
	}
	return now.Sub(p.beatAt)
}

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
)

// handler serves control requests by passing them to the owner goroutine.
type handler struct{ s *Supervisor }

func (h handler) Do(ctx context.Context, req control.Request) control.Response {
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
	case s.events <- ev(reply):
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
	case "status":
		respond(reply, control.Response{OK: true, Status: s.status()})
	case "reload":
		s.log.Info("reload requested over the control socket")
		s.reload(reply)
	case "scale":
		s.scale(req.N, reply)
	case "stop":
		s.log.Info("stop requested over the control socket")
		s.beginStop(nil)
		respond(reply, control.Response{OK: true, Message: "stopping"})
	default:
		respond(reply, control.Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
	}
}

func (s *Supervisor) status() *control.Status {
	st := &control.Status{
		PID:        os.Getpid(),
		Listen:     s.addr,
		Mode:       s.cfg.Mode,
		Generation: s.gen,
		UptimeS:    time.Since(s.begun).Seconds(),
	}
	now := time.Now()
	for _, p := range s.live {
		w := control.WorkerStatus{
			Slot:          p.slot.id,
			PID:           p.pid,
			Generation:    p.gen,
			State:         control.State(p.state.String()),
			UptimeS:       p.uptime().Seconds(),
			Restarts:      p.slot.restarts,
			OpenConns:     s.openConns(p),
			Requests:      p.beat.Requests,
			RSSBytes:      p.beat.RSS,
			CPUPercent:    p.cpuPct,
			HeartbeatAgeS: p.heartbeatAge(now).Seconds(),
		}
		st.Workers = append(st.Workers, w)
	}
	slices.SortFunc(st.Workers, func(a, b control.WorkerStatus) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.PID - b.PID
	})
	return st
}

// credentials resolves -user and -group into the credential workers run
// with. Only root can start processes as another user.
func (s *Supervisor) credentials() error {
	if s.cfg.User == "" {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("-user needs the supervisor to run as root")
	}
	u, err := user.Lookup(s.cfg.User)
	if err != nil {
		if u, err = user.LookupId(s.cfg.User); err != nil {
			return fmt.Errorf("-user %s: %w", s.cfg.User, err)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if s.cfg.Group != "" {
		g, err := user.LookupGroup(s.cfg.Group)
		if err != nil {
			if g, err = user.LookupGroupId(s.cfg.Group); err != nil {
				return fmt.Errorf("-group %s: %w", s.cfg.Group, err)
			}
		}
		gid, _ = strconv.ParseUint(g.Gid, 10, 32)
	}
	// Groups empty: drop the supervisor's supplementary groups (root's).
	s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	return nil
}

// openConns is p's open connections: exact from the handoff counts when
// workers report closes (least-conn), else from p's last heartbeat.
func (s *Supervisor) openConns(p *process) int64 {
	if p.t != nil && s.loadReports() {
		return p.t.Load()
	}
	return int64(p.beat.Conns)
}

// heartbeatAge is the time since p's last heartbeat; -1s before the first.
func (p *process) heartbeatAge(now time.Time) time.Duration {
	if p.beatAt.IsZero() {
		return -time.Second
	}
	return now.Sub(p.beatAt)
}

// loadReports says whether workers report closed connections (least-conn
// needs them), which makes the supervisor's own open-connection count exact;
// otherwise the heartbeat's count is used.
func (s *Supervisor) loadReports() bool {
	return s.cfg.Mode == ipc.ModeRR && s.cfg.Balance == "least-conn"
}

package supervisor

import (
	"fmt"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/procfs"
)

// hangKillWait is how long a hung worker has, after SIGQUIT, to print its
// goroutine dump before SIGKILL.
const hangKillWait = 2 * time.Second

// freezeGap: a gap this long between two ticks of the owner loop means the
// supervisor itself did not run (docker pause, systemctl freeze, SIGSTOP of
// the whole group, a log pipe that blocked it). Its workers were frozen
// too, or their heartbeats waited unread: their silence says nothing.
const freezeGap = 2 * time.Second

// health watches the workers' heartbeats on the owner loop's tick:
// hangs, recycling triggers, and the supervisor's own freezes. It is the
// field health of a Supervisor, owned by its owner goroutine.
type health struct {
	s *Supervisor

	lastTick time.Time // the owner loop's last tick, for freeze detection
}

// onBeat records a heartbeat. Only a healthy beat (the worker's own health
// check passed) counts as a sign of life.
func (h *health) onBeat(p *process, hb ipc.Heartbeat) {
	if h.s.live[p.pid] != p {
		return
	}
	now := h.s.sys.Now()
	p.beat = hb
	if p.t != nil {
		p.beatHanded, p.beatBack = p.t.Handed(), p.t.HandedBack()
	}
	p.recent.add(now, hb)
	if hb.Healthy {
		p.beatAt, p.watched = now, true
	}
	if p.unhealthy != !hb.Healthy && p.state == control.StateReady {
		// Logged when it changes, not at every beat.
		if hb.Healthy {
			h.s.log.Info("worker reports healthy again", p.fields()...)
		} else {
			h.s.log.Warn("worker reports unhealthy", p.fields()...)
		}
	}
	p.unhealthy = !hb.Healthy
	if t, ok := h.s.sys.CPUTicks(p.pid); ok {
		if secs := now.Sub(p.cpuAt).Seconds(); !p.cpuAt.IsZero() && secs > 0 {
			p.cpuPct = float64(t-p.cpuTicks) / procfs.ClockTicks / secs * 100
		}
		p.cpuTicks, p.cpuAt = t, now
	}
	if p.state != control.StateReady || p.asked || p.slot.cur != p {
		return
	}
	switch {
	case p.maxRequests > 0 && hb.Requests >= uint64(p.maxRequests):
		h.s.reloader.recycle(p, "served "+strconv.FormatUint(hb.Requests, 10)+" requests (-max-requests)")
	case h.s.cfg.MaxRSS > 0 && hb.RSS > h.s.cfg.MaxRSS:
		h.s.reloader.recycle(p, "RSS "+strconv.FormatUint(hb.RSS>>20, 10)+"MiB above -max-rss")
	}
}

// onTick runs every tickEvery: it notices its own stalls, finds hung
// workers and pings systemd's watchdog.
func (h *health) onTick() {
	now := h.s.sys.Now()
	if gap := now.Sub(h.lastTick); !h.lastTick.IsZero() && gap > freezeGap {
		h.thawed(now, gap)
	}
	h.lastTick = now
	h.s.mode.handoff().Check(time.Now())
	h.s.rebalance(time.Now())
	h.findHung(now)
	h.s.svc.keepAlive(now)
}

// thawed restarts every heartbeat clock after the supervisor was frozen for
// gap: a worker is hung only if it stays silent for -hang-timeout from now.
func (h *health) thawed(now time.Time, gap time.Duration) {
	h.s.counts.freezes++
	h.s.log.Warn("the supervisor did not run for a while; restarting heartbeat clocks", zap.Duration("gap", gap))
	h.s.emit(nil, control.Event{Kind: control.EventFreeze, GapS: gap.Seconds()})
	for _, p := range h.s.live {
		if p.state == control.StateReady {
			p.beatAt = now
		}
	}
}

// findHung replaces ready workers without a healthy heartbeat for
// -hang-timeout: every prefork worker, and others once they have sent one
// (a systemd worker's WATCHDOG=1).
func (h *health) findHung(now time.Time) {
	for _, p := range h.s.live {
		if p.state != control.StateReady || p.asked || !p.watched || p.held.Load() {
			continue
		}
		last := p.beatAt
		if p.readyAt.After(last) {
			last = p.readyAt
		}
		if silent := now.Sub(last); silent > h.s.cfg.HangTimeout {
			h.s.log.Error("worker hung: no heartbeat; sending SIGQUIT for a goroutine dump, then SIGKILL",
				p.fields(zap.Duration("silent", silent), zap.Duration("hang_timeout", h.s.cfg.HangTimeout))...)
			h.s.emit(p, control.Event{Kind: control.EventHang, SilentS: silent.Seconds()})
			h.replace(p, control.CauseHang)
		}
	}
}

// replace takes p out of service at once and respawns its slot through the
// crash budget. A hung worker gets SIGQUIT, which makes a Go worker print
// every goroutine's stack (so the log says where it hung) and exit, after
// SIGCONT in case it was stopped, since a stopped process does not act on
// SIGQUIT; SIGKILL follows after hangKillWait. Any other cause is killed.
func (h *health) replace(p *process, cause control.Cause) {
	h.s.dismiss(p, cause)
	if cause == control.CauseHang {
		p.proc.Signal(syscall.SIGQUIT)
		p.proc.Signal(syscall.SIGCONT)
		h.s.after(hangKillWait, evKillDue{p: p})
	} else {
		p.proc.Signal(syscall.SIGKILL)
	}
	// A rollout's new worker is no slot's yet: its exit, asked for, is no
	// crash, so the rollout waiting for it must fail here.
	if h.s.reloader.roll != nil && h.s.reloader.roll.next == p {
		h.s.reloader.rollFailed(fmt.Errorf("worker %d (pid %d) replaced before it was ready: %s", p.slot.id, p.pid, cause))
		return
	}
	if p.slot.cur == p {
		h.s.reloader.lost(p, cause) // a canary's hang fails it (canary.go)
		h.s.vacate(p.slot)
		h.s.crashed(p.slot, p.uptime(h.s.sys.Now()), cause)
	}
}

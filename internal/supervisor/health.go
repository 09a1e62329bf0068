package supervisor

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/ipc"
)

// hangKillWait is how long a hung worker has, after SIGQUIT, to print its
// goroutine dump before SIGKILL.
const hangKillWait = 2 * time.Second

// tickEvery is how often the owner goroutine checks heartbeats.
const tickEvery = 250 * time.Millisecond

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in
// /proc/PID/stat; 100 on every Linux architecture Go supports.
const clockTicks = 100

// onBeat records a heartbeat. Only a healthy beat (the worker's own health
// check passed) counts as a sign of life.
func (s *Supervisor) onBeat(p *process, hb ipc.Heartbeat) {
	now := time.Now()
	p.beat = hb
	if hb.Healthy {
		p.beatAt = now
	} else if p.state == stateReady {
		s.log.Warn("worker reports unhealthy", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid))
	}
	if t, ok := cpuTicks(p.pid); ok {
		if !p.cpuAt.IsZero() {
			secs := now.Sub(p.cpuAt).Seconds()
			if secs > 0 {
				p.cpuPct = float64(t-p.cpuTicks) / clockTicks / secs * 100
			}
		}
		p.cpuTicks, p.cpuAt = t, now
	}
	if p.state != stateReady || p.asked || p.slot.cur != p {
		return
	}
	switch {
	case p.maxRequests > 0 && hb.Requests >= uint64(p.maxRequests):
		s.recycle(p, "served "+strconv.FormatUint(hb.Requests, 10)+" requests (-max-requests)")
	case s.cfg.MaxRSS > 0 && hb.RSS > s.cfg.MaxRSS:
		s.recycle(p, "RSS "+strconv.FormatUint(hb.RSS>>20, 10)+"MiB above -max-rss")
	}
}

// onTick finds hung workers: ready, and without a healthy heartbeat for
// -hang-timeout.
func (s *Supervisor) onTick() {
	now := time.Now()
	for _, p := range s.live {
		if p.state != stateReady || p.asked {
			continue
		}
		last := p.beatAt
		if p.readyAt.After(last) {
			last = p.readyAt
		}
		if silent := now.Sub(last); silent > s.cfg.HangTimeout {
			s.hung(p, silent)
		}
	}
}

// hung replaces a worker that stopped answering. SIGQUIT makes a Go worker
// print every goroutine's stack to stderr (so the log says where it hung)
// and exit; SIGCONT resumes it first if it was stopped, since a stopped
// process does not act on SIGQUIT. SIGKILL follows after hangKillWait.
func (s *Supervisor) hung(p *process, silent time.Duration) {
	s.log.Error("worker hung: no heartbeat; sending SIGQUIT for a goroutine dump, then SIGKILL",
		zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Duration("silent", silent), zap.Duration("hang_timeout", s.cfg.HangTimeout))
	s.emit("hang", p, "silent_s", silent.Seconds())
	s.dismiss(p, "hang")
	p.cmd.Process.Signal(syscall.SIGQUIT)
	p.cmd.Process.Signal(syscall.SIGCONT)
	s.after(hangKillWait, evKillDue{p: p})
	if p.slot.cur == p {
		s.vacate(p.slot)
		s.crashed(p.slot, p.uptime(), "hang")
	}
}

// cpuTicks reads a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	return u + st, err1 == nil && err2 == nil
}

// keepAlive pings systemd's watchdog (WatchdogSec=) from the owner loop, so
// that a stuck loop stops the pings and systemd restarts the supervisor; a
// ping from a goroutine of its own would only prove the runtime alive. It
// pings on the first tick once WatchdogInterval (half the timeout) is less
// than a tick away, so pings stay within the timeout whenever that exceeds
// two ticks.
func (s *Supervisor) keepAlive(now time.Time) {
	if every := s.notify.WatchdogInterval(); every > 0 && now.Sub(s.pinged) >= every-tickEvery {
		s.notify.Notify("WATCHDOG=1")
		s.pinged = now
	}
}

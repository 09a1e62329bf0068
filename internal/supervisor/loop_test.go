package supervisor

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/sdnotify"
)

// death is one unrequested exit, at a time since the test began, of a
// worker that ran for uptime.
type death struct{ at, uptime time.Duration }

func TestCrashBudget(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		max    int
		deaths []death
		want   time.Duration // delay after the last death
		spent  bool
	}{
		{"first crash respawns at once", 10, []death{{0, time.Hour}}, 0, false},
		{"first young death respawns at once", 10, []death{{0, time.Millisecond}}, 0, false},
		{"second young death waits 100ms", 10, []death{{0, 0}, {time.Second, 0}}, 100 * time.Millisecond, false},
		{"third young death doubles", 10, []death{{0, 0}, {time.Second, 0}, {2 * time.Second, 0}}, 200 * time.Millisecond, false},
		{"a worker that lived resets the backoff", 10, []death{{0, 0}, {time.Second, 0}, {2 * time.Second, 0}, {30 * time.Second, time.Minute}}, 0, false},
		{"the delay is capped at 10s", 10, repeat(9, 5*time.Second, 0), 10 * time.Second, false},
		{"more than max crashes in the window spend the budget", 3, repeat(4, time.Second, time.Hour), 0, true},
		{"crashes outside the window do not count", 3, []death{{0, time.Hour}, {time.Second, time.Hour}, {2 * time.Second, time.Hour}, {2 * time.Minute, time.Hour}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b crashBudget
			var have time.Duration
			var spent bool
			for _, d := range tt.deaths {
				have, _, spent = b.crash(t0.Add(d.at), d.uptime, tt.max, time.Minute)
			}
			if have != tt.want || spent != tt.spent {
				t.Errorf("delay %s spent %v, want %s spent %v", have, spent, tt.want, tt.spent)
			}
		})
	}
}

// repeat is n deaths every interval, each after uptime.
func repeat(n int, every, uptime time.Duration) []death {
	out := make([]death, n)
	for i := range out {
		out[i] = death{time.Duration(i) * every, uptime}
	}
	return out
}

func TestCrashRespawns(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	victim := h.cur(1)
	h.exit(victim, 1)
	p := h.cur(1)
	if p == nil || p == victim {
		t.Fatal("slot 1 was not respawned at once after its first crash")
	}
	if h.forks(control.CauseCrash) != 1 {
		t.Errorf("forks with cause crash: %d, want 1", h.forks(control.CauseCrash))
	}
	if e := h.events(control.EventExit); len(e) != 1 || e[0].Reason != control.CauseCrash || e[0].Code != 1 {
		t.Errorf("exit events %v, want one crash with code 1", e)
	}
	if h.s.counts.exits[control.CauseCrash] != 1 || h.s.counts.spawns[control.CauseCrash] != 1 {
		t.Errorf("counters %v %v", h.s.counts.exits, h.s.counts.spawns)
	}
	// The respawned worker dies young: the next respawn waits 100ms.
	h.ready(p)
	h.advance(time.Second)
	h.exit(p, 1)
	if h.cur(1) != nil {
		t.Fatal("a second young death respawned at once")
	}
	h.advance(99 * time.Millisecond)
	if h.cur(1) != nil {
		t.Fatal("respawned before the 100ms backoff")
	}
	h.advance(time.Millisecond)
	if h.cur(1) == nil {
		t.Fatal("not respawned after the 100ms backoff")
	}
}

func TestCrashBudgetSpentStops(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxCrashes = 2 })
	h.start(true)
	for range 3 {
		p := h.cur(1)
		if p == nil {
			h.advance(time.Second) // the backoff of a young death
			p = h.cur(1)
		}
		h.ready(p)
		h.exit(p, 2)
	}
	if h.s.phase != phaseStopping {
		t.Fatalf("phase %s after 3 crashes with -max-crashes 2, want stopping", h.s.phase)
	}
	if err := h.s.stopErr; err == nil || !strings.Contains(err.Error(), "-max-crashes 2") {
		t.Fatalf("stop error %v, want one naming -max-crashes", err)
	}
	other := h.cur(2)
	if !h.fake(other).drained() {
		t.Error("the other worker was not asked to drain")
	}
	h.exit(other, 0)
	if done, err := h.stopped(); !done || err == nil {
		t.Errorf("stopped %v err %v, want stopped with an error (exit 1)", done, err)
	}
}

func TestStartupFailure(t *testing.T) {
	t.Run("exit before ready", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(false)
		h.ready(h.cur(1))
		h.exit(h.cur(2), 3)
		if h.s.phase != phaseStopping || h.s.stopErr == nil || !strings.Contains(h.s.stopErr.Error(), "exit code 3") {
			t.Fatalf("phase %s err %v, want stopping with the worker's exit code", h.s.phase, h.s.stopErr)
		}
		if h.forks(control.CauseCrash) != 0 {
			t.Error("a worker that failed to boot was respawned")
		}
	})
	t.Run("ready timeout", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.ReadyTimeout = 5 * time.Second })
		h.start(false)
		h.ready(h.cur(1))
		slow := h.cur(2)
		h.advance(5 * time.Second)
		if !h.fake(slow).got(syscall.SIGKILL) {
			t.Fatal("the worker that missed -ready-timeout was not killed")
		}
		if h.s.stopErr == nil || !strings.Contains(h.s.stopErr.Error(), "-ready-timeout") {
			t.Fatalf("stop error %v, want one naming -ready-timeout", h.s.stopErr)
		}
		if h.s.counts.exits[control.CauseReadyTimeout] != 1 {
			t.Errorf("exits %v, want one ready-timeout", h.s.counts.exits)
		}
	})
	t.Run("spawn fails", func(t *testing.T) {
		h := newHarness(t, nil)
		h.mode.failAt[2] = errEMFILE
		h.start(false)
		if h.s.stopErr == nil || !strings.Contains(h.s.stopErr.Error(), "too many open files") {
			t.Fatalf("stop error %v, want the spawn error", h.s.stopErr)
		}
		if len(h.s.live) != 1 {
			t.Errorf("%d live processes, want the one started", len(h.s.live))
		}
	})
}

func TestReload(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		old1, old2 := h.cur(1), h.cur(2)
		reply := h.control(control.Request{Cmd: control.CmdReload})
		for _, old := range []*process{old1, old2} {
			next := h.s.reloader.roll.next
			if next == nil || next.slot != old.slot || next.gen != 2 {
				t.Fatalf("rollout's next worker %+v, want generation 2 in slot %d", next, old.slot.id)
			}
			if h.fake(old).drained() {
				t.Fatal("old worker drained before its replacement was ready")
			}
			h.ready(next)
			if !h.fake(old).drained() || h.cur(old.slot.id) != next || !h.mode.routed(next) || h.mode.routed(old) {
				t.Fatal("the ready replacement did not take the slot from the old worker")
			}
			h.exit(old, 0)
		}
		if r := h.answer(reply); !r.OK || !strings.Contains(r.Message, "replaced 2 workers") {
			t.Fatalf("reply %+v", r)
		}
		if h.s.gen != 2 || h.s.counts.reloads["success"] != 1 || h.forks(control.CauseCrash) != 0 {
			t.Errorf("gen %d reloads %v", h.s.gen, h.s.counts.reloads)
		}
	})
	t.Run("new worker fails halfway", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		reply := h.control(control.Request{Cmd: control.CmdReload})
		h.ready(h.s.reloader.roll.next)
		old2 := h.cur(2)
		h.exit(h.s.reloader.roll.next, 1)
		r := h.answer(reply)
		if r.OK || !strings.Contains(r.Error, "after 1 of 2 slots") || !strings.Contains(r.Error, "exit code 1") {
			t.Fatalf("reply %+v, want a failure that says where and why", r)
		}
		if h.cur(2) != old2 || old2.state != control.StateReady || !h.mode.routed(old2) {
			t.Fatal("the old worker of the slot not reached stopped serving")
		}
		if h.readyCount() != 2 || h.forks(control.CauseCrash) != 0 {
			t.Errorf("%d ready, %d crash forks", h.readyCount(), h.forks(control.CauseCrash))
		}
	})
	t.Run("new worker times out halfway", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.ReadyTimeout = time.Second })
		h.start(true)
		reply := h.control(control.Request{Cmd: control.CmdReload})
		next := h.s.reloader.roll.next
		h.advance(time.Second)
		if r := h.answer(reply); r.OK || !strings.Contains(r.Error, "-ready-timeout") {
			t.Fatalf("reply %+v", r)
		}
		if !h.fake(next).got(syscall.SIGKILL) || h.cur(1).gen != 1 || h.readyCount() != 2 {
			t.Fatal("the slow new worker was not killed, or the old one stopped serving")
		}
	})
	t.Run("reload during a reload", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		first := h.control(control.Request{Cmd: control.CmdReload})
		second := h.control(control.Request{Cmd: control.CmdReload})
		for range 4 {
			h.ready(h.s.reloader.roll.next)
		}
		if !h.answer(first).OK || !h.answer(second).OK {
			t.Fatal("a reload failed")
		}
		if h.s.gen != 3 || h.cur(1).gen != 3 || h.cur(2).gen != 3 {
			t.Fatalf("generation %d, want 3 after two reloads", h.s.gen)
		}
	})
	t.Run("a queued reload that cannot fork says why", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		up := h.control(control.Request{Cmd: control.CmdScale, N: 3})
		queued := h.control(control.Request{Cmd: control.CmdReload})
		h.mode.failAt[1] = errEMFILE
		h.ready(h.cur(3))
		if !h.answer(up).OK {
			t.Fatal("scale failed")
		}
		if r := h.answer(queued); r.OK || !strings.Contains(r.Error, "too many open files") {
			t.Fatalf("reply %+v, want the spawn error", r)
		}
	})
	t.Run("SIGHUP during start-up is deferred", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(false)
		h.signal(syscall.SIGHUP)
		if len(h.events(control.EventDeferred)) != 1 {
			t.Fatal("no deferred event")
		}
		h.ready(h.cur(1))
		h.ready(h.cur(2))
		if h.s.reloader.roll == nil || h.s.gen != 2 {
			t.Fatal("the deferred reload did not start once the workers were ready")
		}
	})
}

func TestScale(t *testing.T) {
	t.Run("up by several with a failure in a middle slot", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		reply := h.control(control.Request{Cmd: control.CmdScale, N: 5})
		h.ready(h.cur(3))
		h.ready(h.cur(5))
		h.exit(h.cur(4), 1)
		r := h.answer(reply)
		if r.OK || !strings.Contains(r.Error, "slot 4") || !strings.Contains(r.Error, "staying at 2") {
			t.Fatalf("reply %+v", r)
		}
		for _, p := range h.s.live {
			if p.slot.id > 2 && !p.asked {
				t.Errorf("slot %d's worker kept", p.slot.id)
			}
		}
		if len(h.s.slots) != 2 || h.cur(1) == nil || h.cur(2) == nil {
			t.Fatalf("%d slots, want the 2 from before with workers", len(h.s.slots))
		}
		if h.forks(control.CauseCrash) != 0 {
			t.Error("a slot of the failed scale was respawned")
		}
	})
	t.Run("up fails to spawn", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		h.mode.failAt[4] = errEMFILE
		r := h.answer(h.control(control.Request{Cmd: control.CmdScale, N: 4}))
		if r.OK || len(h.s.slots) != 2 || h.s.scaler.scaling != nil {
			t.Fatalf("reply %+v, %d slots", r, len(h.s.slots))
		}
	})
	t.Run("up and down", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		up := h.control(control.Request{Cmd: control.CmdScale, N: 3})
		h.ready(h.cur(3))
		if !h.answer(up).OK {
			t.Fatal("scale up failed")
		}
		third := h.cur(3)
		down := h.control(control.Request{Cmd: control.CmdScale, N: 2})
		if !pending(down) || !h.fake(third).drained() {
			t.Fatal("scale down answered before its worker left, or did not drain it")
		}
		h.exit(third, 0)
		if r := h.answer(down); !r.OK || len(h.s.slots) != 2 || len(h.mode.retired) != 1 {
			t.Fatalf("reply %+v slots %d retired %v", r, len(h.s.slots), h.mode.retired)
		}
	})
	// reuseport hands a retired slot's backlog on as soon as it is
	// retired: by then no leaving worker may be in the rotation.
	t.Run("down by two unroutes both before retiring", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		up := h.control(control.Request{Cmd: control.CmdScale, N: 4})
		h.ready(h.cur(3))
		h.ready(h.cur(4))
		if !h.answer(up).OK {
			t.Fatal("scale up failed")
		}
		leaving := []*process{h.cur(3), h.cur(4)}
		h.mode.onRetire = func(sl *slot) {
			for _, p := range leaving {
				if h.mode.routed(p) {
					t.Errorf("slot %d retired while slot %d's leaving worker is still routed", sl.id, p.slot.id)
				}
			}
		}
		down := h.control(control.Request{Cmd: control.CmdScale, N: 2})
		if want, have := []int{4, 3}, h.mode.retired; !slices.Equal(want, have) {
			t.Fatalf("retired %v, want %v", have, want)
		}
		h.exit(leaving[0], 0)
		h.exit(leaving[1], 0)
		if r := h.answer(down); !r.OK || len(h.s.slots) != 2 {
			t.Fatalf("reply %+v slots %d", r, len(h.s.slots))
		}
	})
	t.Run("down while a reload runs", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		h.control(control.Request{Cmd: control.CmdReload})
		r := h.answer(h.control(control.Request{Cmd: control.CmdScale, N: 1}))
		if r.OK || !strings.Contains(r.Error, "in progress") {
			t.Fatalf("reply %+v, want a refusal while the reload runs", r)
		}
		h.signal(syscall.SIGTTOU) // a signal is queued instead
		if len(h.s.slots) != 2 {
			t.Fatal("TTOU acted during the reload")
		}
		h.ready(h.s.reloader.roll.next)
		h.ready(h.s.reloader.roll.next)
		if len(h.s.slots) != 1 {
			t.Fatalf("%d slots after the reload, want the queued TTOU applied", len(h.s.slots))
		}
	})
}

// TTOU never goes below one worker, but queued ones are not all lost when
// there are more of them than workers to remove.
func TestQueuedTTOUsStopAtOne(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	h.control(control.Request{Cmd: control.CmdReload})
	h.signal(syscall.SIGTTOU)
	h.signal(syscall.SIGTTOU)
	h.ready(h.s.reloader.roll.next)
	h.ready(h.s.reloader.roll.next)
	if len(h.s.slots) != 1 {
		t.Fatalf("%d slots after two queued TTOUs with 2 workers, want 1", len(h.s.slots))
	}
}

func TestHang(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HangTimeout = 3 * time.Second })
	h.start(true)
	silent := h.cur(2)
	for range 3 {
		h.advance(time.Second)
		h.beat(h.cur(1), ipc.Heartbeat{})
		h.tick()
	}
	if h.fake(silent).got(syscall.SIGQUIT) || h.fake(h.cur(1)).got(syscall.SIGQUIT) {
		t.Fatal("a worker was taken for hung within -hang-timeout")
	}
	h.advance(time.Second)
	h.beat(h.cur(1), ipc.Heartbeat{})
	h.tick()
	if !h.fake(silent).got(syscall.SIGQUIT) || !h.fake(silent).got(syscall.SIGCONT) {
		t.Fatal("the worker silent past -hang-timeout got no SIGQUIT and SIGCONT")
	}
	if h.fake(h.cur(1)).got(syscall.SIGQUIT) {
		t.Fatal("the worker that kept beating was taken for hung")
	}
	if h.cur(2) == silent || h.cur(2) == nil {
		t.Fatal("the hung worker's slot was not respawned")
	}
	if h.fake(silent).got(syscall.SIGKILL) {
		t.Fatal("SIGKILL before the goroutine dump's wait")
	}
	h.advance(hangKillWait)
	if !h.fake(silent).got(syscall.SIGKILL) {
		t.Fatal("no SIGKILL after the goroutine dump's wait")
	}
	if h.s.counts.exits[control.CauseHang] != 1 || h.s.counts.spawns[control.CauseHang] != 1 {
		t.Errorf("counts %v %v", h.s.counts.exits, h.s.counts.spawns)
	}
}

func TestFreezeKillsNoWorker(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HangTimeout = 3 * time.Second })
	h.start(true)
	h.tick()
	for _, p := range h.s.live {
		h.beat(p, ipc.Heartbeat{})
	}
	// The whole process group is stopped for a minute: no tick, no
	// heartbeat. On thaw the first tick comes before any heartbeat.
	h.advance(time.Minute)
	h.tick()
	for _, p := range h.s.live {
		if h.fake(p).got(syscall.SIGQUIT) {
			t.Fatalf("worker %d taken for hung after a freeze of the supervisor", p.pid)
		}
	}
	if len(h.events(control.EventFreeze)) != 1 {
		t.Fatal("no freeze event")
	}
	// A worker that stays silent for -hang-timeout after the thaw is
	// still found.
	silent := h.cur(2)
	for range 4 {
		h.advance(time.Second)
		h.beat(h.cur(1), ipc.Heartbeat{})
		h.tick()
	}
	if !h.fake(silent).got(syscall.SIGQUIT) || h.fake(h.cur(1)).got(syscall.SIGQUIT) {
		t.Fatal("after the thaw, want the silent worker found and the other kept")
	}
}

func TestRecycle(t *testing.T) {
	t.Run("by requests, with jitter, one slot at a time", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.MaxRequests, c.MaxRequestsJitter = 1000, 100 })
		h.start(true)
		for _, sl := range h.s.slots {
			if m := sl.cur.maxRequests; m < 1000 || m > 1100 {
				t.Fatalf("slot %d recycles after %d requests, want 1000..1100", sl.id, m)
			}
		}
		first, second := h.cur(1), h.cur(2)
		h.beat(first, ipc.Heartbeat{Requests: 999})
		if h.s.reloader.roll != nil {
			t.Fatal("recycled below -max-requests")
		}
		h.beat(first, ipc.Heartbeat{Requests: 1100})
		h.beat(second, ipc.Heartbeat{Requests: 1100})
		if h.s.reloader.roll == nil || h.s.reloader.roll.next.slot.id != 1 || len(h.s.live) != 3 {
			t.Fatal("want one recycle, of slot 1, at a time")
		}
		h.ready(h.s.reloader.roll.next)
		if !h.fake(first).drained() {
			t.Fatal("recycled worker not drained")
		}
		h.beat(second, ipc.Heartbeat{Requests: 1101})
		if h.s.reloader.roll == nil || h.s.reloader.roll.next.slot.id != 2 {
			t.Fatal("slot 2 not recycled after slot 1's recycle ended")
		}
	})
	t.Run("by RSS", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.MaxRSS = 100 << 20 })
		h.start(true)
		h.beat(h.cur(2), ipc.Heartbeat{RSS: 99 << 20})
		if h.s.reloader.roll != nil {
			t.Fatal("recycled below -max-rss")
		}
		h.beat(h.cur(2), ipc.Heartbeat{RSS: 101 << 20})
		if h.s.reloader.roll == nil || h.s.reloader.roll.reason != control.CauseRecycle || h.s.reloader.roll.next.slot.id != 2 {
			t.Fatal("no recycle of slot 2 above -max-rss")
		}
	})
}

func TestStop(t *testing.T) {
	t.Run("drain, grace, SIGKILL", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.Grace = 10 * time.Second })
		h.start(true)
		quick, slow := h.cur(1), h.cur(2)
		h.signal(syscall.SIGTERM)
		if !h.mode.stopped || !h.fake(quick).drained() || !h.fake(slow).drained() {
			t.Fatal("stop did not close the listeners and drain every worker")
		}
		h.exit(quick, 0)
		h.advance(9 * time.Second)
		if h.fake(slow).got(syscall.SIGKILL) {
			t.Fatal("killed before -grace")
		}
		h.advance(time.Second)
		if !h.fake(slow).got(syscall.SIGKILL) {
			t.Fatal("not killed at -grace")
		}
		if done, err := h.stopped(); !done || err != nil {
			t.Fatalf("stopped %v err %v, want a clean stop (exit 0)", done, err)
		}
		if h.forks(control.CauseCrash) != 0 {
			t.Error("a worker was respawned during the stop")
		}
	})
	t.Run("a second signal kills at once", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		h.signal(syscall.SIGTERM)
		h.signal(syscall.SIGINT)
		if done, err := h.stopped(); !done || err == nil {
			t.Fatalf("stopped %v err %v, want every worker killed and an error (exit 1)", done, err)
		}
	})
	t.Run("a drain that meets a full channel is retried", func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(true)
		p := h.cur(1)
		// Fill the worker's control channel, as a backlog handed to a
		// reuseport worker over it can.
		msg, _ := ipc.AppendFrame(nil, ipc.TypeMessage, []byte("backlog"))
		for p.ctl.Send(msg, nil) == nil {
		}
		h.signal(syscall.SIGTERM)
		if h.fake(p).got(syscall.SIGKILL) {
			t.Fatal("worker killed because its control channel was full")
		}
		if h.fake(p).drained() { // reads the queue: room for a retry
			t.Fatal("a drain frame got through a full channel")
		}
		h.advance(drainRetry)
		if !h.fake(p).drained() {
			t.Fatal("the drain was not sent again")
		}
	})
}

// systemd hears STOPPING=1 last when a stop ends a reload: a READY=1 after
// it would tell it the service is up again.
func TestStopDuringReloadNotifiesStoppingLast(t *testing.T) {
	name := fmt.Sprintf("@prefork-supervisor-test-%d", os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	h := newHarness(t, nil)
	h.s.notify = sdnotify.New()
	h.start(true)
	h.control(control.Request{Cmd: control.CmdReload})
	h.signal(syscall.SIGTERM)
	// Every notification was sent before signal returned: take what is
	// queued without waiting.
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	buf := make([]byte, 4096)
	rc.Control(func(fd uintptr) {
		for range 100 {
			n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			if err != nil {
				return
			}
			got = append(got, strings.SplitN(string(buf[:n]), "\n", 2)[0])
		}
	})
	if len(got) == 0 || got[len(got)-1] != "STOPPING=1" {
		t.Fatalf("notifications %q, want STOPPING=1 last", got)
	}
}

// A worker that says ready and exits at once is a crash after ready, not a
// failed start: its exit waits for its control reader to pass on the
// frames it sent before it exited.
func TestReadyThenExitKeepsOrder(t *testing.T) {
	for range 20 {
		h := newHarness(t, func(c *Config) { c.Workers = 1 })
		h.start(false)
		p := h.cur(1)
		if err := h.fake(p).ctl.Send(ipc.AppendReady(nil, 0), nil); err != nil {
			t.Fatal(err)
		}
		h.exit(p, 1)
		if h.s.stopErr != nil {
			t.Fatalf("a worker that was ready before it crashed stopped the start-up: %v", h.s.stopErr)
		}
		if h.cur(1) == nil || h.cur(1) == p {
			t.Fatal("the crashed worker was not respawned")
		}
	}
}

// A recycle whose new worker cannot boot is retried after a backoff, not
// at every heartbeat of the worker it was to replace.
func TestFailedRecycleBacksOff(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxRequests = 100 })
	h.start(true)
	p := h.cur(1)
	for range 5 {
		h.beat(p, ipc.Heartbeat{Requests: 1000})
		if r := h.s.reloader.roll; r != nil {
			h.exit(r.next, 1) // the new build cannot boot
		}
		h.advance(time.Second)
	}
	if n := h.forks(control.CauseRecycle); n != 2 {
		t.Fatalf("%d recycle forks in 5s of failing boots, want 2 (at 0s, then after 2s)", n)
	}
	h.advance(time.Minute)
	h.beat(p, ipc.Heartbeat{Requests: 1000})
	h.ready(h.s.reloader.roll.next)
	if h.cur(1) == p || h.cur(1).slot.recycleFails != 0 {
		t.Fatal("a recycle that works after failures did not replace the worker and reset the backoff")
	}
}

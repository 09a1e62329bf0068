package supervisor

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/prefork/prefork/internal/control"
)

// forkAsync calls Engine.Fork and lets the owner take the call; the
// result arrives once the worker is ready (or the Fork fails).
func (h *harness) forkAsync(env ...string) <-chan forkReply {
	h.t.Helper()
	got := make(chan forkReply, 1)
	go func() {
		slot, pid, err := (&Engine{s: h.s}).Fork(context.Background(), env)
		got <- forkReply{slot: slot, pid: pid, err: err}
	}()
	h.await("the fork", func(ev any) bool { _, ok := ev.(evCall); return ok })
	h.run()
	return got
}

// receive is what Fork returned; the owner has answered it already, and
// only the goroutine that called it is left to run.
func receive(t *testing.T, ch <-chan forkReply) forkReply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Fork has not returned")
		return forkReply{}
	}
}

// Node's start-up: no workers, so start-up is over at once; then each Fork
// adds a slot and returns once its worker is ready.
func TestForkFromNone(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Workers, c.Respawn = 0, RespawnManual })
	h.start(false)
	if h.s.phase != phaseRunning || len(h.s.slots) != 0 {
		t.Fatalf("phase %s with %d slots, want running with none", h.s.phase, len(h.s.slots))
	}
	for i := 1; i <= 3; i++ {
		got := h.forkAsync()
		p := h.cur(i)
		if p == nil || len(p.slot.forks) != 1 {
			t.Fatalf("fork %d: no worker started, or Fork returned before it was ready", i)
		}
		h.ready(p)
		if r := receive(t, got); r.err != nil || r.slot != i || r.pid != p.pid {
			t.Fatalf("fork %d = %+v, want slot %d pid %d", i, r, i, p.pid)
		}
	}
}

// A Fork during start-up waits for its worker, not for the end of
// start-up, which then waits for it too.
func TestForkDuringStartup(t *testing.T) {
	h := newHarness(t, nil)
	h.start(false)
	got := h.forkAsync()
	p := h.cur(3)
	h.ready(p)
	if r := receive(t, got); r.err != nil || r.slot != 3 {
		t.Fatalf("Fork during start-up = %+v", r)
	}
	if h.s.phase != phaseStarting {
		t.Fatalf("phase %s with slots 1 and 2 not ready", h.s.phase)
	}
	h.ready(h.cur(1))
	h.ready(h.cur(2))
	if h.s.phase != phaseRunning {
		t.Fatalf("phase %s with every slot ready", h.s.phase)
	}
}

// Under the manual policy an exit is only reported: the slot waits, no
// budget is spent, and the program's Fork fills it again.
func TestManualRespawn(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Respawn = RespawnManual; c.MaxCrashes = 1 })
	h.start(true)
	for range 3 { // more than the crash budget
		p := h.cur(1)
		h.exit(p, 1)
		if h.cur(1) != nil || h.forks(control.CauseCrash) != 0 {
			t.Fatal("the primary respawned a worker under the manual policy")
		}
		if stopped, err := h.stopped(); stopped || h.s.phase == phaseStopping {
			t.Fatalf("stopped after crashes under the manual policy: %v", err)
		}
		got := h.forkAsync()
		q := h.cur(1)
		if q == nil || len(h.s.slots) != 2 {
			t.Fatalf("Fork after an exit: slot 1 worker %v, %d slots; want slot 1 filled, 2 slots", q, len(h.s.slots))
		}
		h.ready(q)
		if r := receive(t, got); r.err != nil || r.slot != 1 {
			t.Fatalf("Fork = %+v", r)
		}
	}
}

// Under the automatic policy, Forks in answer to exits take the respawned
// workers: two crashes at once and two Forks leave the cluster at its size,
// and neither Fork fails.
func TestAutoRespawnClaimedByFork(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HangTimeout = time.Hour }) // time passes without heartbeats
	core, logs := zapobserver.New(zap.WarnLevel)
	h.s.log = zap.New(core)
	h.start(true)
	h.exit(h.cur(1), 1)
	h.exit(h.cur(2), 1)
	a, b := h.forkAsync(), h.forkAsync()
	if len(h.s.slots) != 2 {
		t.Fatalf("%d slots after two crashes and two Forks, want 2", len(h.s.slots))
	}
	h.ready(h.cur(1))
	h.ready(h.cur(2))
	ra, rb := receive(t, a), receive(t, b)
	if ra.err != nil || rb.err != nil || ra.slot == rb.slot {
		t.Fatalf("Forks = %+v and %+v, want slots 1 and 2", ra, rb)
	}
	if n := logs.FilterMessageSnippet("set Settings.Respawn to RespawnManual").Len(); n != 1 {
		t.Fatalf("%d log lines explain the claimed Forks, want 1", n)
	}
	// Past the window, a Fork adds a worker.
	h.advance(claimWindow + 1)
	h.exit(h.cur(1), 1)
	h.ready(h.cur(1))
	h.advance(claimWindow + 1)
	c := h.forkAsync()
	h.ready(h.cur(3))
	if r := receive(t, c); r.err != nil || r.slot != 3 {
		t.Fatalf("Fork long after an exit = %+v, want a new slot 3", r)
	}
}

// A spent crash budget stops the supervisor with ErrCrashBudget.
func TestCrashBudgetError(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxCrashes = 1 })
	h.start(true)
	h.exit(h.cur(1), 1)
	h.ready(h.cur(1))
	h.exit(h.cur(1), 1)
	if _, err := h.stopped(); !errors.Is(err, ErrCrashBudget) {
		t.Fatalf("stop error %v, want ErrCrashBudget", err)
	}
}

// A worker that leaves on its own (its leave frame) is replaced by the
// policy, and its exit is no crash.
func TestLeave(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	p := h.cur(1)
	h.s.handle(evLeaving{p: p})
	h.run()
	if !p.asked || p.reason != control.CauseDisconnect || h.cur(1) == p || h.cur(1) == nil {
		t.Fatalf("asked %v reason %q, slot 1 replaced %v", p.asked, p.reason, h.cur(1) != p)
	}
	h.exit(p, 0)
	if h.s.counts.exits[control.CauseCrash] != 0 || len(p.slot.budget.crashes) != 0 {
		t.Fatal("a worker that left counted as a crash")
	}
}

package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/latency"
)

// beatOf is a heartbeat of a worker that has served n requests since it
// started, errs of them 5xx, each taking took.
func beatOf(n, errs uint64, took time.Duration) ipc.Heartbeat {
	w := served(n, errs, took)
	return ipc.Heartbeat{Requests: n, Latency: &w.latency, Outcomes: &w.outcomes}
}

// canaryRun is a supervisor of 3 workers under a canary reload of slot 1
// with a 2s bake, its canary ready and baking.
type canaryRun struct {
	*harness
	reply  chan control.Response
	canary *process
	old    [3]*process
}

func startCanary(t *testing.T, req control.Request) *canaryRun {
	h := newHarness(t, func(c *Config) { c.Workers = 3 })
	h.start(true)
	c := &canaryRun{harness: h, old: [3]*process{h.cur(1), h.cur(2), h.cur(3)}}
	one := 1
	req.Cmd, req.Canary, req.BakeMS = control.CmdReload, &one, 2000
	c.reply = h.control(req)
	c.canary = h.s.reloader.roll.next
	if c.canary == nil || c.canary.slot.id != 1 || c.canary.gen != 2 || h.s.gen != 1 {
		t.Fatalf("canary %+v, generation %d: want slot 1 in generation 2 while 1 serves", c.canary, h.s.gen)
	}
	h.ready(c.canary)
	if st := h.s.reloader.canaryStatus(); st == nil || st.State != control.CanaryBaking {
		t.Fatalf("canary status %+v, want baking", st)
	}
	return c
}

// traffic: every ready worker of the old generation serves n requests in
// the next second, the canary n with errs 5xx taking took.
func (c *canaryRun) traffic(n, errs uint64, took time.Duration) {
	c.advance(time.Second)
	for _, p := range c.s.live {
		if p.state != control.StateReady || p.slot.cur != p {
			continue
		}
		prev := p.beat.Requests
		if p.gen == c.canary.gen {
			prevErr := uint64(0)
			if p.beat.Outcomes != nil {
				prevErr = p.beat.Outcomes[latency.ClassServerError]
			}
			c.beat(p, beatOf(prev+n, prevErr+errs, took))
		} else {
			c.beat(p, beatOf(prev+n, 0, time.Millisecond))
		}
	}
}

// rolledBack checks that every slot runs generation 1 again once the
// kept-release worker of slot 1 is ready.
func (c *canaryRun) rolledBack(t *testing.T, why string) control.Response {
	t.Helper()
	next := c.s.reloader.roll.next
	if next == nil || next.gen != 1 || next.slot.id != 1 {
		t.Fatalf("rollback worker %+v, want slot 1 in generation 1", next)
	}
	c.ready(next)
	r := c.answer(c.reply)
	if r.OK || !strings.Contains(r.Error, "rolled back") || !strings.Contains(r.Error, why) {
		t.Fatalf("reply %+v, want a rollback because %q", r, why)
	}
	for id := 1; id <= 3; id++ {
		if c.cur(id).gen != 1 {
			t.Fatalf("slot %d runs generation %d after the rollback", id, c.cur(id).gen)
		}
	}
	if !c.fake(c.canary).drained() || c.s.gen != 1 || c.s.counts.reloads["rollback"] != 1 {
		t.Fatalf("canary drained %v, generation %d, reloads %v", c.fake(c.canary).drained(), c.s.gen, c.s.counts.reloads)
	}
	if st := c.s.status().Canary; st == nil || st.State != control.CanaryRolledBack || !strings.Contains(st.Why, why) {
		t.Fatalf("status canary %+v, want rolled back because %q", st, why)
	}
	if len(c.events(control.EventVerdict)) != 1 || len(c.events(control.EventRollback)) < 2 {
		t.Fatalf("events: %d verdicts, %d rollback", len(c.events(control.EventVerdict)), len(c.events(control.EventRollback)))
	}
	return r
}

func TestCanary(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  control.Request
		run  func(t *testing.T, c *canaryRun)
	}{
		{"pass, then the rest", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.traffic(200, 0, time.Millisecond)
			// While it bakes, ctl status shows both generations side by side.
			if st := c.s.status().Canary; st == nil || st.State != control.CanaryBaking || st.New.Requests != 200 || st.Old.Requests != 400 ||
				st.New.Workers != 1 || st.Old.Workers != 2 || st.New.ErrorRate != 0 || st.BakedS != 1 {
				t.Fatalf("status while baking: %+v", st)
			}
			c.traffic(200, 0, time.Millisecond)
			if v := c.events(control.EventVerdict); len(v) != 1 || v[0].Verdict != control.VerdictPass || v[0].NewRequests != 200 {
				t.Fatalf("verdicts %+v, want one pass on the 200 canary requests the window saw", v)
			}
			for range 2 {
				c.ready(c.s.reloader.roll.next)
			}
			if r := c.answer(c.reply); !r.OK || !strings.Contains(r.Message, "canary pass") {
				t.Fatalf("reply %+v", r)
			}
			if c.s.gen != 2 || c.cur(2).gen != 2 || c.cur(3).gen != 2 {
				t.Fatalf("generation %d after a passed canary", c.s.gen)
			}
		}},
		{"5xx on 20%", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.traffic(200, 40, time.Millisecond)
			c.traffic(200, 40, time.Millisecond)
			c.rolledBack(t, "error rate 20.00%")
		}},
		{"+50ms", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.traffic(200, 0, 51*time.Millisecond)
			c.traffic(200, 0, 51*time.Millisecond)
			c.rolledBack(t, "p99 latency")
		}},
		{"too little traffic rolls back", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.traffic(20, 0, time.Millisecond)
			c.traffic(20, 0, time.Millisecond)
			c.rolledBack(t, "not enough traffic")
		}},
		{"too little traffic, continue", control.Request{Insufficient: control.InsufficientContinue}, func(t *testing.T, c *canaryRun) {
			c.traffic(20, 0, time.Millisecond)
			c.traffic(20, 0, time.Millisecond)
			for range 2 {
				c.ready(c.s.reloader.roll.next)
			}
			if r := c.answer(c.reply); !r.OK || !strings.Contains(r.Message, "canary insufficient") {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"a crash during the bake", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.traffic(200, 0, time.Millisecond)
			c.exit(c.canary, 2) // at 1s of 2: the verdict does not wait
			if v := c.events(control.EventVerdict); len(v) != 1 || v[0].Crashes != 1 {
				t.Fatalf("verdicts %+v, want one at the crash", v)
			}
			// The crashed slot was respawned in the kept release: nothing
			// to roll back there.
			if c.cur(1) == nil || c.cur(1).gen != 1 {
				t.Fatalf("slot 1 after the crash: %+v", c.cur(1))
			}
			c.ready(c.cur(1))
			if r := c.answer(c.reply); r.OK || !strings.Contains(r.Error, "crashed 1 time") {
				t.Fatalf("reply %+v", r)
			}
			c.advance(2 * time.Second) // the bake's timer fires on nothing
		}},
		{"a hang during the bake", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.s.cfg.HangTimeout = time.Second
			for range 2 { // the old generation beats, the canary is silent
				c.advance(600 * time.Millisecond)
				for _, p := range c.old[1:] {
					c.beat(p, beatOf(p.beat.Requests+100, 0, time.Millisecond))
				}
			}
			c.tick()
			if v := c.events(control.EventVerdict); len(v) != 1 || !strings.Contains(v[0].Why, "hung 1 time") {
				t.Fatalf("verdicts %+v, want one at the hang", v)
			}
			if !c.fake(c.canary).got(syscall.SIGQUIT) || c.cur(1) == nil || c.cur(1).gen != 1 {
				t.Fatalf("the hung canary was not replaced by the kept release: slot 1 %+v", c.cur(1))
			}
			if r := c.answer(c.reply); r.OK || !strings.Contains(r.Error, "hung") {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"a second reload while baking", control.Request{}, func(t *testing.T, c *canaryRun) {
			second := c.control(control.Request{Cmd: control.CmdReload})
			if !pending(second) || len(c.events(control.EventDeferred)) != 1 {
				t.Fatal("a reload during the bake was not queued")
			}
			c.traffic(200, 40, time.Millisecond)
			c.traffic(200, 40, time.Millisecond)
			c.rolledBack(t, "error rate")
			// Queued behind the canary, it would reload the release just
			// rolled back: refused, and says why.
			if r := c.answer(second); r.OK || !strings.Contains(r.Error, "nothing new on disk") {
				t.Fatalf("second reload: %+v, want refused", r)
			}
			forced := c.control(control.Request{Cmd: control.CmdReload, Force: true})
			if c.s.reloader.roll == nil || !pending(forced) {
				t.Fatal("a forced reload did not start")
			}
		}},
		{"stop while baking", control.Request{}, func(t *testing.T, c *canaryRun) {
			c.signal(syscall.SIGTERM)
			if r := c.answer(c.reply); r.OK || !strings.Contains(r.Error, "stopping") {
				t.Fatalf("reply %+v", r)
			}
			c.advance(3 * time.Second)
			if len(c.events(control.EventVerdict)) != 0 || c.s.reloader.roll != nil {
				t.Fatal("a verdict after the stop began")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, startCanary(t, tc.req))
		})
	}
}

func TestCanaryRefused(t *testing.T) {
	h := newHarness(t, nil) // 2 workers
	h.start(true)
	two := 2
	r := h.answer(h.control(control.Request{Cmd: control.CmdReload, Canary: &two}))
	if r.OK || !strings.Contains(r.Error, "-canary 2 needs more than 2 workers") || h.s.reloader.roll != nil {
		t.Fatalf("reply %+v, want a refusal", r)
	}
}

// SIGHUP reloads with the supervisor's own -canary and -bake.
func TestCanarySIGHUP(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Workers, c.Canary, c.Bake = 3, 1, 5*time.Second })
	h.start(true)
	h.signal(syscall.SIGHUP)
	r := h.s.reloader.roll
	if r == nil || r.canary == nil || len(r.canary.slots) != 1 || r.canary.opts.bake != 5*time.Second {
		t.Fatalf("SIGHUP started %+v, want a canary of 1 slot baking 5s", r)
	}
	zero := 0
	h.ready(r.next)
	h.advance(5 * time.Second) // too little traffic: rolled back
	h.ready(h.s.reloader.roll.next)
	if h.s.reloader.roll != nil || h.s.counts.reloads["rollback"] != 1 {
		t.Fatalf("reloads %v", h.s.counts.reloads)
	}
	// ctl reload -canary 0 overrides the default: a plain rolling reload,
	// forced past the release just rolled back.
	h.control(control.Request{Cmd: control.CmdReload, Canary: &zero, Force: true})
	if r := h.s.reloader.roll; r == nil || r.canary != nil {
		t.Fatalf("ctl reload -canary 0 started %+v, want a plain reload", r)
	}
}

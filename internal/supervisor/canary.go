package supervisor

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/latency"
	"github.com/prefork/prefork/internal/settings"
)

// reloadOptions is how one reload rolls: every slot in turn, or a canary
// of some slots judged first.
type reloadOptions struct {
	canary       int           // slots replaced and judged first; 0: none
	bake         time.Duration // how long they serve before the verdict
	insufficient string        // "" for -canary-insufficient
	force        bool          // reload even the release a canary rolled back
}

// reloadOptions is req's options over the supervisor's own: -canary and
// -bake are the defaults of every reload that does not say, SIGHUP's too.
func (s *Supervisor) reloadOptions(req control.Request) reloadOptions {
	o := reloadOptions{canary: s.cfg.Canary, bake: s.cfg.Bake, insufficient: req.Insufficient, force: req.Force}
	if req.Canary != nil {
		o.canary = *req.Canary
	}
	if req.BakeMS > 0 {
		o.bake = req.Bake()
	}
	if o.bake <= 0 {
		o.bake = settings.DefaultBake
	}
	return o
}

// canary is a canary rollout's policy and state: the rollout replaces
// its slots first (starting); they serve beside the old generation for
// the bake (baking); judge (verdict.go) compares the two over that window,
// and the rollout goes on with the other slots (passed) or gives the
// canary's slots workers of the kept release again (rolling back, rolled
// back).
type canary struct {
	opts   reloadOptions
	gates  gates
	state  string  // control.CanaryStarting ...
	slots  []*slot // replaced first
	rest   []*slot // replaced after a pass
	gen    int     // the canary's generation
	oldGen int     // the one serving, whose release a rollback runs
	rel    *release

	bakeFrom time.Time
	base     map[*process]beatSample // each worker's counters when the bake began
	crashes  int                     // of canary workers, since they started
	hangs    int
	verdict  *verdict
	decided  time.Time
}

// evVerdictDue: the bake is over, or a canary worker crashed or hung.
type evVerdictDue struct{ c *canary }

// startCanary makes r a canary rollout of the first opts.canary slots.
func (rl *reloader) startCanary(r *rollout, opts reloadOptions, rel *release) {
	slots := liveSlots(rl.s.slots)
	n := opts.canary
	c := &canary{opts: opts, gates: gatesOf(rl.s.cfg, opts.insufficient), state: control.CanaryStarting,
		slots: slots[:n], rest: slots[n:], gen: r.gen, oldGen: rl.s.gen, rel: rel}
	r.canary, r.todo = c, append([]*slot(nil), c.slots...)
	rl.s.log.Info("canary reload started", zap.Int("generation", r.gen), zap.Int("canary", n), zap.Duration("bake", opts.bake))
	rl.s.emit(nil, control.Event{Kind: control.EventCanary, Step: control.StepStart, Generation: r.gen, Canary: n, BakeS: opts.bake.Seconds()})
}

// liveSlots are the slots not scaled away.
func liveSlots(all []*slot) []*slot {
	var out []*slot
	for _, sl := range all {
		if !sl.removed {
			out = append(out, sl)
		}
	}
	return out
}

// canaryRefusal says why a canary of n slots cannot run now; "" if it can.
func (rl *reloader) canaryRefusal(n int) string {
	if live := len(liveSlots(rl.s.slots)); n >= live {
		return fmt.Sprintf("reload: -canary %d needs more than %d workers, to compare the canary with the old generation (there are %d)", n, n, live)
	}
	return ""
}

// bake begins the canary's bake: its slots serve, and every worker's
// counters now open the window both generations are judged over.
func (rl *reloader) bake(c *canary) {
	c.state, c.bakeFrom = control.CanaryBaking, rl.s.sys.Now()
	c.base = map[*process]beatSample{}
	for _, p := range rl.s.live {
		if p.slot.cur == p {
			c.base[p] = sampleOf(p.beatAt, p.beat)
		}
	}
	rl.s.log.Info("canary baking", zap.Int("generation", c.gen), zap.Duration("bake", c.opts.bake))
	rl.s.emit(nil, control.Event{Kind: control.EventCanary, Step: control.StepBake, Generation: c.gen, Canary: len(c.slots), BakeS: c.opts.bake.Seconds()})
	if c.crashes+c.hangs > 0 {
		rl.s.enqueue(evVerdictDue{c: c}) // one died while the others started
		return
	}
	rl.s.after(c.opts.bake, evVerdictDue{c: c})
}

// lost records a canary worker that crashed or hung; the verdict comes at
// once if it bakes.
func (rl *reloader) lost(p *process, cause control.Cause) {
	r := rl.roll
	if r == nil || r.canary == nil || p.gen != r.canary.gen {
		return
	}
	c := r.canary
	switch c.state {
	case control.CanaryStarting, control.CanaryBaking:
	default:
		return
	}
	if cause == control.CauseHang {
		c.hangs++
	} else {
		c.crashes++
	}
	if c.state == control.CanaryBaking {
		rl.s.enqueue(evVerdictDue{c: c})
	}
}

// windows are both generations' figures since the bake began.
func (rl *reloader) windows(c *canary) (old, canary genWindow) {
	beats := rl.s.proto.beats()
	old.beats, canary.beats = beats, beats
	for _, p := range rl.s.live {
		if p.slot.cur != p || p.state != control.StateReady {
			continue
		}
		w := &old
		if p.gen == c.gen {
			w = &canary
		}
		w.add(c.base[p], sampleOf(p.beatAt, p.beat))
	}
	canary.crashes, canary.hangs = c.crashes, c.hangs
	return old, canary
}

// verdictDue judges the canary, if it still bakes, and acts on the
// verdict.
func (rl *reloader) verdictDue(c *canary) {
	if rl.roll == nil || rl.roll.canary != c || c.state != control.CanaryBaking {
		return // over meanwhile: judged at a crash, or stopped
	}
	old, canary := rl.windows(c)
	rl.decide(c, judge(c.gates, old, canary))
}

// decide records v and goes on or rolls back.
func (rl *reloader) decide(c *canary, v verdict) {
	c.verdict, c.decided = &v, rl.s.sys.Now()
	decision := control.InsufficientContinue
	if v.rollback {
		decision = control.InsufficientRollback
	}
	rl.s.counts.verdicts[v.verdict]++
	rl.s.log.Info("canary verdict", zap.String("verdict", v.verdict), zap.String("decision", decision), zap.String("why", v.why),
		zap.Float64("old_error_rate", v.old.ErrorRate), zap.Float64("new_error_rate", v.new.ErrorRate),
		zap.Float64("old_p99_s", v.old.P99S), zap.Float64("new_p99_s", v.new.P99S))
	rl.s.emit(nil, control.Event{Kind: control.EventVerdict, Generation: c.gen, Verdict: v.verdict, Decision: decision, Why: v.why,
		OldRequests: int(v.old.Requests), NewRequests: int(v.new.Requests), OldErrorRate: v.old.ErrorRate, NewErrorRate: v.new.ErrorRate,
		OldP99S: v.old.P99S, NewP99S: v.new.P99S, Crashes: v.new.Crashes})
	r := rl.roll
	r.next = nil
	if !v.rollback {
		c.state = control.CanaryPassed
		rl.s.gen = c.gen
		r.todo = append(r.todo[:0], c.rest...)
		rl.rollStep()
		return
	}
	c.state = control.CanaryRollingBack
	rl.s.releases.reject(c.rel, v.why)
	rl.s.emit(nil, control.Event{Kind: control.EventRollback, Step: control.StepStart, Generation: c.oldGen})
	r.reason, r.gen = control.CauseRollback, c.oldGen
	r.todo = append(r.todo[:0], c.slots...)
	rl.rollStep()
}

// rolledBack ends a rollback: every canary slot runs the kept release.
func (rl *reloader) rolledBack(r *rollout) {
	c := r.canary
	c.state = control.CanaryRolledBack
	rl.roll, rl.last = nil, c
	rl.s.counts.reloads["rollback"]++
	took := rl.s.sys.Now().Sub(r.began)
	rl.s.log.Warn("canary rolled back", zap.Int("generation", c.oldGen), zap.Int("replaced", r.done), zap.Duration("took", took))
	rl.s.emit(nil, control.Event{Kind: control.EventRollback, Step: control.StepDone, Generation: c.oldGen, Replaced: r.done})
	rl.s.notify.Ready(rl.s.statusLine())
	msg := fmt.Sprintf("reload: canary of generation %d rolled back to generation %d after %s: %s: %s",
		c.gen, c.oldGen, took.Round(time.Millisecond), c.verdict.verdict, c.verdict.why)
	st := rl.canaryStatus()
	for _, w := range r.waiters {
		respond(w, control.Response{Error: r.note + msg, Canary: st})
	}
	rl.s.releases.prune()
	rl.s.idle()
}

// canaryStatus is the canary baking now, or the last one; nil before any.
func (rl *reloader) canaryStatus() *control.CanaryStatus {
	c := rl.last
	if rl.roll != nil && rl.roll.canary != nil {
		c = rl.roll.canary
	}
	if c == nil {
		return nil
	}
	st := &control.CanaryStatus{State: c.state, Generation: c.gen, OldGeneration: c.oldGen, BakeS: c.opts.bake.Seconds()}
	for _, sl := range c.slots {
		st.Slots = append(st.Slots, sl.id)
	}
	switch {
	case c.verdict != nil:
		st.Old, st.New, st.Verdict, st.Why = c.verdict.old, c.verdict.new, c.verdict.verdict, c.verdict.why
		st.Decided = c.decided.UTC().Format(time.RFC3339Nano)
		if !c.bakeFrom.IsZero() {
			st.BakedS = c.decided.Sub(c.bakeFrom).Seconds()
		}
	case c.state == control.CanaryBaking:
		old, canary := rl.windows(c)
		st.Old, st.New = old.figures(), canary.figures()
		st.BakedS = rl.s.sys.Now().Sub(c.bakeFrom).Seconds()
	}
	return st
}

// baking reports whether a canary bakes now.
func (rl *reloader) baking() bool {
	return rl.roll != nil && rl.roll.canary != nil && rl.roll.canary.state == control.CanaryBaking
}

// statusClasses names o's counts for ctl status and the dashboard; nil
// without o.
func statusClasses(o *latency.Outcomes) map[string]uint64 {
	if o == nil {
		return nil
	}
	return map[string]uint64{"2xx": o[latency.ClassOK], "3xx": o[latency.ClassRedirect], "4xx": o[latency.ClassClientError],
		"5xx": o[latency.ClassServerError], "panic": o[latency.ClassPanic]}
}

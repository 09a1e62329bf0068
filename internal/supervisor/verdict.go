package supervisor

import (
	"fmt"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/latency"
	"github.com/prefork/prefork/internal/settings"
)

// latencySlack: the p99 gate fails a canary only when its p99 is also this
// much above the old one's, so that the noise among sub-millisecond
// latencies (one histogram bucket up) fails no release.
const latencySlack = 5 * time.Millisecond

// gates are a canary's thresholds (-canary-error-pp, -canary-error-ratio,
// -canary-latency-ratio, -canary-min-requests) and what too little
// traffic decides (-canary-insufficient).
type gates struct {
	errorPP, errorRatio, latencyRatio float64
	minRequests                       uint64
	insufficient                      string
}

// gatesOf reads the gates from cfg, a zero one as its default.
func gatesOf(cfg Config, insufficient string) gates {
	or := func(v, def float64) float64 {
		if v == 0 {
			return def
		}
		return v
	}
	g := gates{
		errorPP:      or(cfg.CanaryErrorPP, settings.DefaultCanaryErrorPP),
		errorRatio:   or(cfg.CanaryErrorRatio, settings.DefaultCanaryErrorRatio),
		latencyRatio: or(cfg.CanaryLatencyRatio, settings.DefaultCanaryLatencyRatio),
		minRequests:  uint64(or(float64(cfg.CanaryMinRequests), settings.DefaultCanaryMinRequests)),
		insufficient: insufficient,
	}
	if g.insufficient == "" {
		g.insufficient = cfg.CanaryInsufficient
	}
	if g.insufficient == "" {
		g.insufficient = control.InsufficientRollback
	}
	return g
}

// genWindow is what one generation's workers did over a canary's bake: the
// difference of their heartbeats' counters from its start to its end.
type genWindow struct {
	workers  int
	requests uint64
	beats    bool // its workers send heartbeats (prefork); else crashes and hangs only
	latency  latency.Counts
	timed    bool // they report latency
	outcomes latency.Outcomes
	counted  bool // they report outcomes (status classes)
	crashes  int
	hangs    int
}

// add adds one worker's counters over the genWindow: from base (its
// heartbeat when the genWindow opened; zero for a worker started since) to
// now.
func (w *genWindow) add(base, now beatSample) {
	w.workers++
	if now.requests >= base.requests {
		w.requests += now.requests - base.requests
	}
	if now.latency != nil {
		d := *now.latency
		if base.latency != nil {
			d = now.latency.Since(base.latency)
		}
		w.latency.Add(&d)
		w.timed = true
	}
	if now.outcomes != nil {
		d := *now.outcomes
		if base.outcomes != nil {
			d = now.outcomes.Since(base.outcomes)
		}
		w.outcomes.Add(&d)
		w.counted = true
	}
}

// errorRate is the share of failed requests, and false when unknown.
func (w *genWindow) errorRate() (float64, bool) {
	n := w.outcomes.Total()
	if !w.counted || n == 0 {
		return 0, false
	}
	return float64(w.outcomes.Errors()) / float64(n), true
}

// figures are w as ctl status and the events show them.
func (w *genWindow) figures() control.GenFigures {
	f := control.GenFigures{Workers: w.workers, Requests: w.requests, Errors: w.outcomes.Errors(), ErrorRate: -1, P99S: -1, Crashes: w.crashes, Hangs: w.hangs}
	if r, ok := w.errorRate(); ok {
		f.ErrorRate = r
	}
	if w.timed {
		f.P99S = w.latency.Quantile(0.99).Seconds()
	}
	return f
}

// verdict is a canary's judgement: pass, fail or insufficient, whether the
// reload goes on, and why, with the figures it was made from.
type verdict struct {
	verdict  string // control.VerdictPass, VerdictFail or VerdictInsufficient
	rollback bool
	why      string
	old, new control.GenFigures
}

// judge compares the canary's genWindow with the old generation's over the
// same time. It is a pure function of its arguments: the order of the
// gates is the order of the checks below, and the first that fails
// decides.
func judge(g gates, old, canary genWindow) verdict {
	v := verdict{verdict: control.VerdictPass, old: old.figures(), new: canary.figures()}
	fail := func(format string, a ...any) verdict {
		v.verdict, v.rollback, v.why = control.VerdictFail, true, fmt.Sprintf(format, a...)
		return v
	}
	switch {
	case canary.crashes > 0:
		return fail("the canary crashed %d time(s) during the bake", canary.crashes)
	case canary.hangs > 0:
		return fail("the canary hung %d time(s) during the bake (no heartbeat for -hang-timeout)", canary.hangs)
	case !canary.beats:
		v.why = "no crash or hang (this worker protocol sends no heartbeat: no error rate or latency to compare)"
		return v
	case canary.requests < g.minRequests:
		v.verdict = control.VerdictInsufficient
		v.rollback = g.insufficient != control.InsufficientContinue
		v.why = fmt.Sprintf("not enough traffic: %d requests to the canary in the bake, fewer than -canary-min-requests %d (-canary-insufficient %s)",
			canary.requests, g.minRequests, g.insufficient)
		return v
	}
	newRate, newOK := canary.errorRate()
	oldRate, _ := old.errorRate()
	if newOK && newRate-oldRate > g.errorPP/100 && newRate >= g.errorRatio*oldRate {
		return fail("error rate %.2f%% against %.2f%% for the old generation (gate: +%g points and %g×)",
			100*newRate, 100*oldRate, g.errorPP, g.errorRatio)
	}
	if canary.timed && old.timed && old.latency.Total() > 0 && canary.latency.Total() > 0 {
		newP99, oldP99 := canary.latency.Quantile(0.99), old.latency.Quantile(0.99)
		if float64(newP99) > g.latencyRatio*float64(oldP99) && newP99-oldP99 > latencySlack {
			return fail("p99 latency %s against %s for the old generation (gate: %g×)",
				newP99.Round(10*time.Microsecond), oldP99.Round(10*time.Microsecond), g.latencyRatio)
		}
	}
	v.why = fmt.Sprintf("%d canary requests: error rate and p99 within the gates, no crash or hang", canary.requests)
	return v
}

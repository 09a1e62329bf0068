package main

import (
	"context"
	"fmt"
	"os"
	"time"
)

// cellKey names one row of the load table.
type cellKey struct{ server, placement, load string }

// rssStat is one memory figure of a server, in KiB.
type rssStat struct{ root, worker, total int }

func statOf(r rss) rssStat { return rssStat{r.root, r.maxWorker(), r.total()} }

func (a rssStat) max(b rssStat) rssStat {
	return rssStat{max(a.root, b.root), max(a.worker, b.worker), max(a.total, b.total)}
}

// quiet returns the runs of k during which other processes stayed under
// the noise limit, or all of them when none did.
func (m *matrix) quiet(k cellKey) []wrkResult {
	return quietRuns(m.runs[k], m.noiseLimit, func(r wrkResult) float64 { return r.noise })
}

// quietRuns returns the runs whose noise stayed under limit, or all of them
// when none did.
func quietRuns[R any](runs []R, limit float64, noise func(R) float64) []R {
	var q []R
	for _, r := range runs {
		if noise(r) <= limit {
			q = append(q, r)
		}
	}
	if len(q) == 0 {
		return runs
	}
	return q
}

// rssRuns collects a server's memory over its launches in one placement.
type rssRuns struct{ idle, load, after []rssStat }

// matrix is every load run, by row.
type matrix struct {
	runs  map[cellKey][]wrkResult
	fails map[cellKey][]string
	rss   map[[2]string]*rssRuns // server, placement
	notes []string

	noiseLimit float64
	roundsLeft int // rounds not yet started
	retries    int // measured runs repeated for noise
}

// matrixOptions are the load parameters.
type matrixOptions struct {
	reps          int
	conns         int
	warmup, dur   time.Duration
	readyTimeout  time.Duration
	servers       []serverSpec
	placementList []placement

	// A measured run during which other processes used more than
	// noiseLimit cores is run once more, if that still lets the matrix end
	// by softEnd; the quieter of the two is kept.
	noiseLimit float64
	softEnd    time.Time
}

// roundCost is the expected duration of one round (launch, two loads).
func (o matrixOptions) roundCost() time.Duration {
	return 2*(o.warmup+o.dur) + 400*time.Millisecond
}

// runMatrix runs every server × placement × load, reps times, going round
// through the servers within each rep so that drift (thermal, noisy
// neighbours) spreads over all of them instead of biasing one.
func runMatrix(ctx context.Context, o matrixOptions, rep *report) *matrix {
	m := &matrix{runs: map[cellKey][]wrkResult{}, fails: map[cellKey][]string{}, rss: map[[2]string]*rssRuns{}}
	m.roundsLeft = o.reps * len(o.placementList) * len(o.servers)
	m.noiseLimit = o.noiseLimit
	for r := 1; r <= o.reps; r++ {
		for _, pl := range o.placementList {
			for _, sp := range o.servers {
				if ctx.Err() != nil {
					return m
				}
				m.roundsLeft--
				m.round(ctx, o, r, pl, sp, rep)
			}
		}
	}
	return m
}

// retryAllowed reports whether one more measured run still lets the
// remaining rounds end by o.softEnd.
func (m *matrix) retryAllowed(o matrixOptions) bool {
	end := time.Now().Add(o.dur + 200*time.Millisecond).Add(time.Duration(m.roundsLeft) * o.roundCost())
	return !end.After(o.softEnd)
}

// round launches sp once and runs both loads against it: for each, a
// warm-up that is not counted, then the measured run, during which the
// server's memory is sampled.
func (m *matrix) round(ctx context.Context, o matrixOptions, r int, pl placement, sp serverSpec, rep *report) {
	progress := fmt.Sprintf("rep %d/%d  %-8s  %-10s", r, o.reps, pl.name, sp.name)
	fail := func(ld wrkLoad, err error) {
		k := cellKey{sp.name, pl.name, ld.name}
		m.fails[k] = append(m.fails[k], fmt.Sprintf("rep %d: %v", r, err))
		rep.raw("FAILED %s %s %s rep %d: %v\n", sp.name, pl.name, ld.name, r, err)
		progress += fmt.Sprintf("  %s FAILED", ld.name)
	}
	defer func() { fmt.Fprintln(os.Stderr, progress) }()

	s, err := launch(sp, pl.pinned)
	if err != nil {
		for _, ld := range loads {
			fail(ld, err)
		}
		return
	}
	defer func() {
		if err := s.stop(); err != nil {
			m.notes = append(m.notes, fmt.Sprintf("rep %d %s %s: %v", r, pl.name, sp.name, err))
		}
		if n := s.log.count("worker exited unexpectedly"); n > 0 {
			m.notes = append(m.notes, fmt.Sprintf("rep %d %s %s: %d unexpected worker exits", r, pl.name, sp.name, n))
		}
		rep.raw("server log: %s %s rep %d (exit: %v)\n%s\n", sp.name, pl.name, r, s.waitErr, s.log.text())
	}()
	if err := s.ready(ctx, o.readyTimeout); err != nil {
		for _, ld := range loads {
			fail(ld, err)
		}
		return
	}
	time.Sleep(100 * time.Millisecond)
	key := [2]string{sp.name, pl.name}
	if m.rss[key] == nil {
		m.rss[key] = &rssRuns{}
	}
	m.rss[key].idle = append(m.rss[key].idle, statOf(s.sampleRSS()))

	url := fmt.Sprintf("http://%s/health", addr(s.port))
	args := func(d time.Duration, ld wrkLoad) []string {
		argv := withScript(wrkArgs(url, pl, ld, o.conns, d), sp.script)
		if sp.proxy {
			argv = proxyArgs(argv, ld, o.conns, wrkThreads(pl))
		}
		return argv
	}
	if s.port2 != 0 {
		script, err := twoPortsScript(s.port, s.port2)
		if err != nil {
			fail(loads[0], err)
			return
		}
		defer os.Remove(script)
		args = func(d time.Duration, ld wrkLoad) []string {
			return twoThreads(withScript(wrkArgs(url, pl, ld, o.conns, d), script))
		}
	}
	var peak rssStat
	for _, ld := range loads {
		if ctx.Err() != nil {
			return
		}
		argv := args(o.warmup, ld)
		if _, raw, err := runWrk(ctx, argv, o.warmup, nil); err != nil {
			fail(ld, fmt.Errorf("warm-up: %w\n%s", err, raw))
			continue
		}
		argv = args(o.dur, ld)
		pids := s.workers()
		if s.spec.procs > 1 {
			pids = append(pids, s.pid())
		}
		pids = append(pids, os.Getpid())
		measure := func() (wrkResult, error) {
			var proxyBefore proxyCounts
			if sp.proxy {
				var err error
				if proxyBefore, err = readProxyCounts(ctx, s.port); err != nil {
					return wrkResult{}, err
				}
			}
			before := snapCPU(pids)
			res, raw, err := runWrk(ctx, argv, o.dur, func() { peak = peak.max(statOf(s.sampleRSS())) })
			after := snapCPU(pids)
			if sp.proxy && err == nil {
				var proxyAfter proxyCounts
				if proxyAfter, err = readProxyCounts(ctx, s.port); err == nil {
					err = checkProxy(proxyBefore, proxyAfter, res, ld, o.conns)
				}
			}
			res.noise, res.steal = noise(before, after, res.cpu)
			res.busiest = busiest(before, after, pids)
			res.serverCPU = perRequest(before, after, pids[:len(pids)-1], res.requests)
			if res.requests > 0 {
				res.clientCPU = res.cpu / time.Duration(res.requests)
			}
			if pl.pinned {
				res.serverIdle = idleShare(before, after, "cpu"+serverCore)
			}
			if s.spec.procs > 1 {
				secs := after.at.Sub(before.at).Seconds()
				res.primaryCPU = float64(after.procs[s.pid()].ticks-before.procs[s.pid()].ticks) / clockTicks / secs
			}
			rep.raw("wrk: %s %s %s rep %d (other processes: %.2f cores [%s], steal %.2f; primary %.2f cores)\n$ %s\n%s\n",
				sp.name, pl.name, ld.name, r, res.noise, res.busiest, res.steal, res.primaryCPU, joinArgs(argv), raw)
			return res, err
		}
		res, err := measure()
		if err == nil && res.noise > o.noiseLimit && m.retryAllowed(o) {
			m.retries++
			rep.raw("noisy (%.2f cores > %.2f): measuring once more", res.noise, o.noiseLimit)
			if again, err2 := measure(); err2 == nil && again.noise < res.noise {
				res = again
			}
		}
		if err != nil {
			fail(ld, err)
			continue
		}
		if s.exited() {
			fail(ld, fmt.Errorf("server exited during the run (%v)", s.waitErr))
			continue
		}
		k := cellKey{sp.name, pl.name, ld.name}
		m.runs[k] = append(m.runs[k], res)
		progress += fmt.Sprintf("  %s %7.0f req/s (noise %3.0f%%)", ld.name, res.rps, res.noise*100)
	}
	m.rss[key].load = append(m.rss[key].load, peak)
	m.rss[key].after = append(m.rss[key].after, statOf(s.sampleRSS()))
}

// perRequest is the CPU time pids spent between a and b, per request. It
// is what the server's code costs whatever else shares the CPUs, which
// req/s is not on a busy machine: a server gets fewer requests done when
// other processes take its CPU, but each one costs about the same.
func perRequest(a, b cpuSnap, pids []int, requests int64) time.Duration {
	var ticks uint64
	for _, pid := range pids {
		if t0, t1 := a.procs[pid].ticks, b.procs[pid].ticks; t1 > t0 {
			ticks += t1 - t0
		}
	}
	if requests <= 0 {
		return 0
	}
	return time.Duration(float64(ticks) / clockTicks * float64(time.Second) / float64(requests))
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Open-loop latency: the load generator (bench/loadgen, vegeta) sends at a
// fixed rate whatever the server's latency, as users arrive, so a stalled
// worker shows as a tail instead of slowing the senders down as in wrk's
// closed loop. The server is pinned to CPU 0 and the generator to CPU 1, as
// in the pinned load table.
//
// The rates are fractions (50%, 80%) of one Go process's maximum, measured
// with wrk in the same run on the same URL. A Go HTTP client costs several
// times the CPU of the Go server per request on /health, so on one core the
// generator could not send at 80% of what one Go process serves on the
// other. The requests therefore go to /spin?us=S (-lat-spin), which spends
// S µs of the serving thread's CPU time before answering: the server's cost
// per request grows by S, the generator's does not, and with S = 300µs 80%
// of the maximum needs about 60% of the generator's core even with a new
// connection per request (see bench/README.md). The generator's cost
// per request is still measured (a short calibration run), and when the
// higher rate would keep it busier than -lat-cpu of its core, both rates
// are scaled down by the same factor: the table says what fraction of the
// maximum each rate is. A generator with spare CPU sends on time and adds
// little of its own queueing to the latencies; each run records its
// achieved rate and CPU, and the check line reports both.

// latLoad is one open-loop load: keep-alive or a new connection per request.
type latLoad struct {
	name      string
	keepalive bool
	wrk       wrkLoad // the closed-loop load whose maximum sets the rates
}

var latLoads = []latLoad{{"keepalive", true, loads[0]}, {"newconn", false, loads[1]}}

// genBusy is the generator CPU, in cores, above which a run may have
// measured the generator: with less, it had idle time on its core.
const genBusy = 0.9

// latFractions are the load levels, as fractions of one Go process's max.
var latFractions = []float64{0.5, 0.8}

// genReport is what bench/loadgen prints (its Report, as JSON).
type genReport struct {
	Target   float64          `json:"target"`
	Rate     float64          `json:"rate"`
	Requests int              `json:"requests"`
	Errors   int              `json:"errors"`
	FirstErr string           `json:"first_err"`
	P50      time.Duration    `json:"p50"`
	P99      time.Duration    `json:"p99"`
	P999     time.Duration    `json:"p999"`
	Max      time.Duration    `json:"max"`
	CPU      time.Duration    `json:"cpu"`
	Elapsed  time.Duration    `json:"elapsed"`
	Codes    map[string]int64 `json:"codes"`
}

// genCPU is the generator's CPU while measuring, in cores.
func (g genReport) genCPU() float64 {
	if g.Elapsed <= 0 {
		return 0
	}
	return g.CPU.Seconds() / g.Elapsed.Seconds()
}

// onTime reports whether the generator sent at the rate asked (within 1%).
func (g genReport) onTime() bool { return g.Rate >= 0.99*g.Target }

// latResult is one measured open-loop run.
type latResult struct {
	genReport
	noise float64       // other processes' CPU during the run, in cores
	runq  time.Duration // server threads' time runnable but off CPU, per request sent
}

// latKey names one row of the latency table.
type latKey struct {
	server, load string
	level        int // index in latFractions
}

// openLoop is every open-loop run and the rates they used.
type openLoop struct {
	max     map[string]float64 // load → go-single's wrk max, req/s
	perReq  map[string]float64 // load → generator CPU seconds per request
	rates   map[string][]int   // load → rate per level
	runs    map[latKey][]latResult
	fails   map[latKey][]string
	notes   []string
	retries int
	limit   float64 // noise limit, cores
}

// latOptions are the open-loop parameters.
type latOptions struct {
	reps        int
	warmup, dur time.Duration
	cpuCap      float64 // highest generator CPU allowed, in cores
	servers     []serverSpec
	single      serverSpec // go-single, for the maximum and calibration
	loadgen     string     // path of the built generator
	noiseLimit  float64
	softEnd     time.Time
	fromMatrix  *matrix // go-single's pinned maxima, when the load table ran
	unpinned    bool    // servers and generator without affinity (rates stay those of pinned go-single)
	waitQuiet   time.Duration
	conns       int
	spin        time.Duration // server CPU per request (/spin?us=); 0 for /health
}

// maxLatSpin is the demo's bound on /spin's us.
const maxLatSpin = 100 * time.Millisecond

// latPath is the path every open-loop request asks for: /spin?us=N with N
// the microseconds of spin, or /health when spin is 0.
func latPath(spin time.Duration) string {
	if spin <= 0 {
		return "/health"
	}
	return "/spin?us=" + itoa(int(spin/time.Microsecond))
}

// latencyCost is the expected duration of the open-loop phase.
func latencyCost(reps, servers int, warmup, dur time.Duration) time.Duration {
	perServer := time.Duration(len(latLoads)*len(latFractions))*(warmup+dur+300*time.Millisecond) + 700*time.Millisecond
	calib := 2*(2*time.Second+2*time.Second) + 2*time.Second
	return calib + time.Duration(reps*servers)*perServer
}

// buildLoadgen builds bench/loadgen (its own module) into bin/.
func buildLoadgen(ctx context.Context, root, goCmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out := filepath.Join(root, "bin", "loadgen")
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", fmt.Errorf("bench: loadgen: %w", err)
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", abs, ".")
	cmd.Dir = filepath.Join(root, "bench", "loadgen")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // see launch
	cmd.WaitDelay = 2 * time.Second
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: build loadgen: %w\n%s", err, b)
	}
	return abs, nil
}

// runGen runs the generator on CPU 1 for warmup+dur (bounded: killed 15s
// later) and returns its report, its total CPU time and its output.
func runGen(ctx context.Context, bin, url string, rate int, keepalive, pinned bool, warmup, dur time.Duration) (genReport, time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, warmup+dur+15*time.Second)
	defer cancel()
	argv := []string{bin, "-url", url, "-rate", itoa(rate),
		"-warmup", warmup.String(), "-duration", dur.String(), fmt.Sprintf("-keepalive=%v", keepalive)}
	if pinned {
		argv = append([]string{"taskset", "-c", clientCore}, argv...)
	}
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // see launch
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	raw := "$ " + joinArgs(argv) + "\n" + stdout.String() + stderr.String()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return genReport{}, cpu, raw, fmt.Errorf("bench: loadgen: %w: %s", err, firstLine(stderr.String()))
	}
	var g genReport
	if err := json.Unmarshal([]byte(stdout.String()), &g); err != nil {
		return g, cpu, raw, fmt.Errorf("bench: loadgen output: %w", err)
	}
	return g, cpu, raw, nil
}

// planRates turns go-single's maximum for a load and the generator's CPU
// per request into the rates of each level: fractions of max, all scaled
// down by one factor when the highest would need more than cpuCap cores of
// generator CPU.
func planRates(peak, perReq, cpuCap float64, fractions []float64) []int {
	top := 0.0
	for _, f := range fractions {
		top = max(top, f*peak)
	}
	scale := 1.0
	if perReq > 0 && top*perReq > cpuCap {
		scale = cpuCap / (top * perReq)
	}
	rates := make([]int, len(fractions))
	for i, f := range fractions {
		rates[i] = max(int(f*peak*scale), 1)
	}
	return rates
}

// runLatency measures go-single's maximum (or takes it from the load
// table), calibrates the generator, then runs every server at every rate.
func runLatency(ctx context.Context, o latOptions, rep *report) *openLoop {
	l := &openLoop{max: map[string]float64{}, perReq: map[string]float64{}, rates: map[string][]int{},
		runs: map[latKey][]latResult{}, fails: map[latKey][]string{}, limit: o.noiseLimit}
	if err := l.calibrate(ctx, o, rep); err != nil {
		l.notes = append(l.notes, err.Error())
		fmt.Fprintln(os.Stderr, err)
		return l
	}
	for r := 1; r <= o.reps; r++ {
		for i, sp := range o.servers {
			if ctx.Err() != nil {
				return l
			}
			left := (o.reps-r)*len(o.servers) + len(o.servers) - i - 1
			l.round(ctx, o, r, sp, left, rep)
		}
	}
	return l
}

// calibrate launches go-single pinned, measures its wrk maximum per load
// unless the load table has it, and the generator's CPU per request at a
// rate well within reach: the lower level, at most 2000/s. A generator's
// cost per request falls as its rate rises (fewer idle wake-ups per
// request), so the lower the probe, the more the higher rate is
// overestimated; the lower level is as near as is safe.
func (l *openLoop) calibrate(ctx context.Context, o latOptions, rep *report) error {
	s, err := launch(o.single, true)
	if err != nil {
		return err
	}
	defer func() {
		if err := s.stop(); err != nil {
			l.notes = append(l.notes, fmt.Sprintf("latency calibration: %v", err))
		}
	}()
	if err := s.ready(ctx, 15*time.Second); err != nil {
		return err
	}
	url := "http://" + addr(s.port) + latPath(o.spin)
	pinned := placements[0]
	for _, ld := range latLoads {
		// The load table measures /health: its maximum serves only then.
		if m := o.fromMatrix; m != nil && o.spin <= 0 {
			if rs := m.quiet(cellKey{"go-single", pinned.name, ld.wrk.name}); len(rs) > 0 {
				l.max[ld.name] = median(rpsOf(rs))
			}
		}
		if l.max[ld.name] == 0 {
			if _, raw, err := runWrk(ctx, wrkArgs(url, pinned, ld.wrk, o.conns, time.Second), time.Second, nil); err != nil {
				return fmt.Errorf("bench: latency: go-single warm-up: %w\n%s", err, raw)
			}
			res, raw, err := runWrk(ctx, wrkArgs(url, pinned, ld.wrk, o.conns, 2*time.Second), 2*time.Second, nil)
			rep.raw("latency: go-single maximum, %s\n%s", ld.name, raw)
			if err != nil {
				return fmt.Errorf("bench: latency: go-single maximum: %w", err)
			}
			l.max[ld.name] = res.rps
		}
		probe := min(int(l.max[ld.name]*latFractions[0]), 2000)
		g, _, raw, err := runGen(ctx, o.loadgen, url, max(probe, 1), ld.keepalive, true, time.Second, 2*time.Second)
		rep.raw("latency: generator calibration, %s\n%s", ld.name, raw)
		if err != nil {
			return err
		}
		if g.Requests > 0 {
			l.perReq[ld.name] = g.CPU.Seconds() / float64(g.Requests)
		}
		l.rates[ld.name] = planRates(l.max[ld.name], l.perReq[ld.name], o.cpuCap, latFractions)
		fmt.Fprintf(os.Stderr, "latency %-9s  go-single max %6.0f req/s, generator %3.0fµs CPU/request → rates %v\n",
			ld.name, l.max[ld.name], l.perReq[ld.name]*1e6, l.rates[ld.name])
	}
	return nil
}

// round launches sp pinned and runs every load at every rate against it.
func (l *openLoop) round(ctx context.Context, o latOptions, r int, sp serverSpec, left int, rep *report) {
	progress := fmt.Sprintf("latency rep %d/%d  %-22s", r, o.reps, sp.name)
	defer func() { fmt.Fprintln(os.Stderr, progress) }()
	failAll := func(err error) {
		for _, ld := range latLoads {
			for i := range latFractions {
				k := latKey{sp.name, ld.name, i}
				l.fails[k] = append(l.fails[k], fmt.Sprintf("rep %d: %v", r, err))
			}
		}
		rep.raw("FAILED latency %s rep %d: %v\n", sp.name, r, err)
		progress += "  FAILED"
	}
	s, err := launch(sp, !o.unpinned)
	if err != nil {
		failAll(err)
		return
	}
	defer func() {
		if err := s.stop(); err != nil {
			l.notes = append(l.notes, fmt.Sprintf("latency rep %d %s: %v", r, sp.name, err))
		}
		rep.raw("server log: latency %s rep %d (exit: %v)\n%s\n", sp.name, r, s.waitErr, s.log.text())
	}()
	if err := s.ready(ctx, 15*time.Second); err != nil {
		failAll(err)
		return
	}
	url := "http://" + addr(s.port) + latPath(o.spin)
	runsLeft := left*len(latLoads)*len(latFractions) + len(latLoads)*len(latFractions)
	for _, ld := range latLoads {
		for i, rate := range l.rates[ld.name] {
			if ctx.Err() != nil {
				return
			}
			runsLeft--
			k := latKey{sp.name, ld.name, i}
			served := s.workers()
			if sp.procs > 1 {
				served = append(served, s.pid())
			}
			pids := append(slices.Clone(served), os.Getpid())
			measure := func() (latResult, error) {
				if o.waitQuiet > 0 {
					waitQuiet(ctx, pids, o.noiseLimit, o.waitQuiet)
				}
				before, wait0 := snapCPU(pids), runqWait(served)
				g, cpu, raw, err := runGen(ctx, o.loadgen, url, rate, ld.keepalive, !o.unpinned, o.warmup, o.dur)
				after, wait1 := snapCPU(pids), runqWait(served)
				res := latResult{genReport: g}
				sent := float64(rate) * (o.warmup + o.dur).Seconds()
				res.runq = time.Duration(float64(wait1-wait0) / sent)
				res.noise, _ = noise(before, after, cpu)
				rep.raw("loadgen: %s %s %d/s rep %d (other processes: %.2f cores [%s]; generator %.0f%% of its core; server run-queue wait %v per request)\n%s",
					sp.name, ld.name, rate, r, res.noise, busiest(before, after, pids), g.genCPU()*100, res.runq, raw)
				return res, err
			}
			res, err := measure()
			perRun := o.warmup + o.dur + 300*time.Millisecond
			if err == nil && res.noise > o.noiseLimit && !time.Now().Add(time.Duration(runsLeft+1)*perRun).After(o.softEnd) {
				l.retries++
				if again, err2 := measure(); err2 == nil && again.noise < res.noise {
					res = again
				}
			}
			if err == nil && s.exited() {
				err = fmt.Errorf("server exited during the run (%v)", s.waitErr)
			}
			if err != nil {
				l.fails[k] = append(l.fails[k], fmt.Sprintf("rep %d: %v", r, err))
				progress += fmt.Sprintf("  %s %d/s FAILED", ld.name, rate)
				continue
			}
			l.runs[k] = append(l.runs[k], res)
			progress += fmt.Sprintf("  %s %d/s p99 %s", ld.name, rate, ms(res.P99))
		}
	}
}

// waitQuiet waits, at most d, for a 300ms window in which processes other
// than pids used less than limit cores: on a shared machine, others' builds
// come in bursts, and a run started between them is more often quiet.
func waitQuiet(ctx context.Context, pids []int, limit float64, d time.Duration) {
	deadline := time.Now().Add(d)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		a := snapCPU(pids)
		time.Sleep(300 * time.Millisecond)
		if other, _ := noise(a, snapCPU(pids), 0); other <= limit {
			return
		}
	}
}

// quiet returns the runs of k under the noise limit, or all when none was.
func (l *openLoop) quiet(k latKey) []latResult {
	return quietRuns(l.runs[k], l.limit, func(r latResult) float64 { return r.noise })
}

// p99 is the median p99 of k over its quiet runs, 0 without runs.
func (l *openLoop) p99(server, load string, level int) time.Duration {
	var ps []time.Duration
	for _, r := range l.quiet(latKey{server, load, level}) {
		ps = append(ps, r.P99)
	}
	return median(ps)
}

// table prints the open-loop table and the generator check.
func (l *openLoop) table(servers []serverSpec, o latOptions, rep *report) {
	var b strings.Builder
	where := "server pinned to CPU 0, generator to CPU 1"
	if o.unpinned {
		where = "UNPINNED: server and generator without affinity"
	}
	cost := "no added cost"
	if o.spin > 0 {
		cost = fmt.Sprintf("S = %v of the serving thread's CPU time per request", o.spin)
	}
	fmt.Fprintf(&b, "open-loop latency: bench/loadgen (vegeta) at a fixed rate, GET %s (%s), %s;\n"+
		"%v measured after %v warm-up, %d rep(s); p50/p99/p99.9 = medians over quiet reps of each run's exact percentiles\n",
		latPath(o.spin), cost, where, o.dur, o.warmup, o.reps)
	for _, ld := range latLoads {
		fmt.Fprintf(&b, "%s: go-single's wrk maximum on the same URL %.0f req/s; generator %.0fµs CPU per request; rates",
			ld.name, l.max[ld.name], l.perReq[ld.name]*1e6)
		scaled := false
		for i, r := range l.rates[ld.name] {
			share := float64(r) / l.max[ld.name]
			scaled = scaled || share < 0.99*latFractions[i]
			fmt.Fprintf(&b, " %d/s (%.0f%% of max, level %.0f%%)", r, 100*share, latFractions[i]*100)
		}
		if scaled {
			fmt.Fprintf(&b, "; SCALED DOWN: at the levels the generator would need more than %.0f%% of its core", o.cpuCap*100)
		}
		b.WriteString("\n")
	}
	nw := nameWidth(servers)
	fmt.Fprintf(&b, "%-*s  %-9s  %7s  %5s  %8s  %8s  %8s  %7s  %6s  %6s  %5s  %4s\n",
		nw, "server", "load", "rate", "of max", "p50", "p99", "p99.9", "runq/rq", "errors", "gencpu", "noise", "reps")
	var sent, onTime, runs int
	var worstCPU float64
	for _, ld := range latLoads {
		for i, rate := range l.rates[ld.name] {
			for _, sp := range servers {
				k := latKey{sp.name, ld.name, i}
				rs := l.quiet(k)
				if len(rs) == 0 {
					fmt.Fprintf(&b, "%-*s  %-9s  %7d  %8s\n", nw, sp.name, ld.name, rate, "FAILED")
					continue
				}
				var p50, p99, p999, runq []time.Duration
				var gcpu []float64
				var noise float64
				errs := 0
				for _, r := range l.runs[k] {
					errs += r.Errors
					runs++
					sent += r.Requests
					if r.onTime() {
						onTime++
					}
					worstCPU = max(worstCPU, r.genCPU())
				}
				for _, r := range rs {
					p50, p99, p999 = append(p50, r.P50), append(p99, r.P99), append(p999, r.P999)
					runq = append(runq, r.runq)
					gcpu = append(gcpu, r.genCPU())
					noise = max(noise, r.noise)
				}
				fmt.Fprintf(&b, "%-*s  %-9s  %7d  %5.0f%%  %8s  %8s  %8s  %5.0fµs  %6d  %5.0f%%  %4.0f%%  %d/%d\n",
					nw, sp.name, ld.name, rate, 100*float64(rate)/l.max[ld.name],
					ms(median(p50)), ms(median(p99)), ms(median(p999)), float64(median(runq))/1e3, errs, median(gcpu)*100, noise*100,
					len(rs), len(l.runs[k]))
			}
			b.WriteString("\n")
		}
	}
	verdict := "ok"
	if onTime < runs || worstCPU > genBusy {
		verdict = "CHECK"
	}
	fmt.Fprintf(&b, "load generator: sent within 1%% of the target rate in %d of %d runs; its CPU at most %.0f%% of its core "+
		"(rates planned for %.0f%%; CHECK when a run was late or above %.0f%%): %s\n",
		onTime, runs, worstCPU*100, o.cpuCap*100, genBusy*100, verdict)
	fmt.Fprintf(&b, "noise above %.0f%% of a core: run once more while time allows (%d repeated); "+
		"gencpu = generator CPU while measuring;\n"+
		"runq/rq = time the server's threads spent runnable but waiting for a CPU, per request sent (schedstat)\n\n",
		o.noiseLimit*100, l.retries)
	b.WriteString(anomalies("latency anomalies", l.notes, l.fails, func(k latKey) string {
		return fmt.Sprintf("%s %s level %d", k.server, k.load, k.level)
	}))
	rep.print(b.String())
}

// latencyTargets appends the open-loop targets to b.
func (l *openLoop) targets(check func(what string, have float64, ok bool, cmp string, want float64, unit string)) {
	for _, ld := range latLoads {
		base := l.p99("go-single", ld.name, 0)
		for _, mode := range []string{"rr", "shared", "reuseport"} {
			p := l.p99(mode, ld.name, 0)
			check(fmt.Sprintf("open %s p99, lower rate: %s / go-single", ld.name, mode),
				float64(p)/float64(base), p > 0 && base > 0, "≤", 1.5, "×")
		}
	}
	for _, ld := range latLoads {
		for i := range latFractions {
			node := l.p99("node-rr", ld.name, i)
			for _, mode := range []string{"rr", "shared", "reuseport"} {
				p := l.p99(mode, ld.name, i)
				check(fmt.Sprintf("open %s p99 at %d/s: %s / node-rr", ld.name, l.rates[ld.name][i], mode),
					float64(p)/float64(node), p > 0 && node > 0, "≤", 1, "×")
			}
		}
	}
}

// latencyServers resolves the comma-separated list of servers of the
// latency table, each a server of all, optionally followed by settings of
// the supervisor: "rr+sched=normal", "reuseport+gomaxprocs=2",
// "rr+balance=least-conn". gomaxprocs sets the workers' GOMAXPROCS (the
// supervisor keeps its own) and also applies to go-single.
func latencyServers(all []serverSpec, root, list string) ([]serverSpec, error) {
	var out []serverSpec
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		sp, err := variant(all, root, name)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

func variant(all []serverSpec, root, name string) (serverSpec, error) {
	parts := strings.Split(name, "+")
	var sp serverSpec
	for _, s := range all {
		if s.name == parts[0] {
			sp = s
		}
	}
	if sp.name == "" {
		return sp, fmt.Errorf("bench: unknown server %q", parts[0])
	}
	sup := sp.name != "go-single" && sp.name != "fasthttp-prefork" && !strings.HasPrefix(sp.name, "node-")
	goWorker := sp.name == "rr" || sp.name == "shared" || sp.name == "reuseport"
	fastWorker := strings.HasPrefix(sp.name, "fasthttp-") && sup
	var flags, workerEnv []string
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok || v == "":
			return sp, fmt.Errorf("bench: server %q: want key=value after +, got %q", name, kv)
		case (k == "sched" || k == "balance") && sup:
			flags = append(flags, "-"+k, v)
		case k == "gomaxprocs" && sp.name == "go-single":
			sp.env = append(sp.env, "GOMAXPROCS="+v)
		case k == "gomaxprocs" && (goWorker || fastWorker):
			workerEnv = append(workerEnv, "GOMAXPROCS="+v)
		default:
			return sp, fmt.Errorf("bench: server %q: %q does not apply to %s", name, k, sp.name)
		}
	}
	base := sp.command
	worker := filepath.Join(root, "bin", "worker")
	sp.name = name
	sp.command = func(port int) []string {
		argv := base(port)
		argv = append(append([]string{argv[0]}, flags...), argv[1:]...)
		if len(workerEnv) > 0 {
			// Only the workers: env sets it, then execs the worker.
			cmd := []string{worker}
			if i := slices.Index(argv, "--"); i >= 0 {
				argv, cmd = argv[:i], argv[i+1:]
			}
			argv = append(append(append(argv, "--", "env"), workerEnv...), cmd...)
		}
		return argv
	}
	return sp, nil
}

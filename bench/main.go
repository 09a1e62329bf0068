// Command bench is prefork's benchmark harness (make bench): it compares the
// supervisor in each mode against one Go process serving the same handler
// and against Node's cluster, measures cold start, respawn and memory, and
// runs the Go micro-benchmarks.
//
//	go run ./bench [-reps 3] [-duration 3s] [-warmup 1s]
//
// Run it from the repository root after make build. Tables go to stdout,
// progress to stderr, and everything, with every raw wrk report and server
// log, to bench/results/<timestamp>.txt. Load goes to 127.0.0.1 only and
// every process it starts is bounded in time and killed by pid (and process
// group) when its run ends, on failure and on Ctrl-C too.
//
// Linux only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	_ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
)

// The harness forks servers and wrk with Pdeathsig, which fires when the
// forking thread exits. Pinning the main goroutine to the main thread, which
// lives as long as the process, and forking only from it keeps Pdeathsig
// meaning "the harness died".
func init() { runtime.LockOSThread() }

func main() { os.Exit(run()) }

type options struct {
	root, goCmd, out    string
	reps, conns         int
	workers, samples    int
	warmup, dur, budget time.Duration
	soft                time.Duration
	noiseLimit          float64
	only                string
	noMicro, noLoad     bool
	noLifecycle         bool

	noLatency         bool
	noKeepAlive       bool
	kaServers         string
	kaReps            int
	latServers        string
	latReps           int
	latWarmup, latDur time.Duration
	latCPU            float64
	latSpin           time.Duration
	latUnpinned       bool
	latWaitQuiet      time.Duration
}

// defaultLatServers are the servers of the open-loop table: the baseline,
// each mode, Node's cluster, and rr with each setting that could set its
// tail changed from the default (see bench/README.md).
const defaultLatServers = "go-single,rr,shared,reuseport,node-rr,node-none,rr+sched=normal,rr+gomaxprocs=2,rr+balance=least-conn"

func parseFlags() options {
	var o options
	flag.StringVar(&o.root, "root", ".", "repository root (holds bin/ and bench/)")
	flag.StringVar(&o.goCmd, "go", "go", "go command for the micro-benchmarks")
	flag.StringVar(&o.out, "out", "bench/results", "results directory")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of every load configuration")
	flag.IntVar(&o.conns, "c", 64, "wrk connections")
	flag.IntVar(&o.workers, "workers", 2, "workers of the supervisor and of Node's cluster")
	flag.IntVar(&o.samples, "samples", 5, "lifecycle samples")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "uncounted wrk warm-up before each measured run (whole seconds)")
	flag.DurationVar(&o.dur, "duration", 3*time.Second, "measured wrk run (whole seconds)")
	flag.DurationVar(&o.budget, "budget", 30*time.Minute, "hard bound on the whole run")
	flag.DurationVar(&o.soft, "soft-budget", 22*time.Minute, "noisy runs are repeated only while the whole run can still end within this")
	flag.Float64Var(&o.noiseLimit, "noise", 0.15, "repeat a measured run once if other processes used more than this many cores during it")
	flag.StringVar(&o.only, "only", "", "comma-separated servers to load (default all: go-single,rr,rr-sticky-cookie,rr-proxy,rr-sticky-ip,rr-2ports,shared,reuseport,singlebinary,node-rr,node-none,prefork-node-rr,prefork-node-shared,prefork-node-reuseport,fasthttp-prefork,fasthttp-rr,fasthttp-shared,fasthttp-reuseport), with settings as in -lat-servers")
	flag.BoolVar(&o.noMicro, "no-micro", false, "skip the Go micro-benchmarks")
	flag.BoolVar(&o.noLoad, "no-load", false, "skip the load table")
	flag.BoolVar(&o.noLifecycle, "no-lifecycle", false, "skip the lifecycle table (-only also limits it to the servers named)")
	flag.BoolVar(&o.noLatency, "no-latency", false, "skip the open-loop latency table")
	flag.BoolVar(&o.noKeepAlive, "no-keepalive", false, "skip the keep-alive table (POSTs through reloads)")
	flag.IntVar(&o.kaReps, "ka-reps", 3, "repetitions of the keep-alive table's latency runs (round-robin over servers)")
	flag.StringVar(&o.kaServers, "ka-servers", "", "servers of the keep-alive table (default all: prefork-handback,prefork-no-handback,go-systemd,node-cluster)")
	flag.StringVar(&o.latServers, "lat-servers", defaultLatServers, "servers of the latency table; a server may carry supervisor settings: rr+sched=normal, rr+gomaxprocs=2, rr+balance=least-conn")
	flag.IntVar(&o.latReps, "lat-reps", 1, "repetitions of every open-loop run (round-robin over servers)")
	flag.DurationVar(&o.latWarmup, "lat-warmup", time.Second, "uncounted open-loop warm-up before each measured run")
	flag.DurationVar(&o.latDur, "lat-duration", 3*time.Second, "measured open-loop run")
	flag.BoolVar(&o.latUnpinned, "lat-unpinned", false, "run the latency table without affinity (servers and generator share both CPUs); for experiments")
	flag.DurationVar(&o.latWaitQuiet, "lat-wait-quiet", 0, "before each open-loop run, wait up to this long for other processes to drop under -noise; for experiments on a shared machine")
	flag.Float64Var(&o.latCPU, "lat-cpu", 0.7, "highest share of its core the load generator may need at the higher rate; rates are scaled down to fit")
	flag.DurationVar(&o.latSpin, "lat-spin", 300*time.Microsecond, "open-loop requests are GET /spin?us=N, spending this much server CPU each (whole µs, at most 100ms); 0 sends GET /health")
	flag.Parse()
	return o
}

func run() int {
	o := parseFlags()
	if err := validate(o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := preflight(o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.budget)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %v: stopping servers (again to kill them at once)\n", s)
		cancel()
		<-sigs
		stopAll(true)
		os.Exit(130)
	}()
	// Whatever happens below, no server outlives the harness.
	defer stopAll(false)

	began := time.Now()
	rep := &report{w: os.Stdout}
	all := specs(o.root, o.workers)
	servers := all
	if o.only != "" {
		var err error
		if servers, err = latencyServers(all, o.root, o.only); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	per := 2*(o.warmup+o.dur) + 400*time.Millisecond
	est := time.Duration(o.reps*len(placements)*len(servers)) * per
	if !o.noLoad {
		fmt.Fprintf(os.Stderr, "bench: %d servers × %d placements × %d reps, %v measured + %v warm-up per load; about %v of load\n",
			len(servers), len(placements), o.reps, o.dur, o.warmup, est.Round(time.Second))
	}

	header := environment(o)
	var latServers []serverSpec
	var latCost time.Duration
	if !o.noLatency {
		var err error
		if latServers, err = latencyServers(all, o.root, o.latServers); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		for _, sp := range latServers {
			if sp.proxy {
				fmt.Fprintf(os.Stderr, "bench: -lat-servers: %s wants a PROXY header on every connection, which only the load table sends\n", sp.name)
				return 2
			}
		}
		latCost = latencyCost(o.latReps, len(latServers), o.latWarmup, o.latDur)
		fmt.Fprintf(os.Stderr, "bench: open-loop latency: %d servers × %d loads × %d rates × %d reps; about %v\n",
			len(latServers), len(latLoads), len(latFractions), o.latReps, latCost.Round(time.Second))
	}

	var lc *lifecycle
	var m *matrix
	var failed error
	if !o.noLifecycle {
		fmt.Fprintln(os.Stderr, "bench: lifecycle (cold start, kill → replacement)")
		var err error
		var only map[string]bool
		if o.only != "" {
			only = map[string]bool{}
			for _, sp := range servers {
				only[sp.name] = true
			}
		}
		lc, err = runLifecycle(ctx, all, only, o.samples, rep)
		if err != nil {
			failed = err
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if !o.noLoad && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "bench: load")
		m = runMatrix(ctx, matrixOptions{
			reps: o.reps, conns: o.conns, warmup: o.warmup, dur: o.dur,
			readyTimeout: 15 * time.Second, servers: servers, placementList: placements,
			noiseLimit: o.noiseLimit, softEnd: began.Add(o.soft - microCost(o) - latCost),
		}, rep)
	}
	var lat *openLoop
	var lo latOptions
	if !o.noLatency && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "bench: open-loop latency")
		lo = latOptions{reps: o.latReps, warmup: o.latWarmup, dur: o.latDur, cpuCap: o.latCPU,
			servers: latServers, single: all[0], unpinned: o.latUnpinned, waitQuiet: o.latWaitQuiet, noiseLimit: o.noiseLimit, conns: o.conns,
			softEnd: began.Add(o.soft - microCost(o)), fromMatrix: m, spin: o.latSpin}
		var err error
		if lo.loadgen, err = buildLoadgen(ctx, o.root, o.goCmd); err != nil {
			failed = errors.Join(failed, err)
			fmt.Fprintln(os.Stderr, err)
		} else {
			lat = runLatency(ctx, lo, rep)
		}
	}
	var kaRows []kaRow
	if !o.noKeepAlive && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "bench: keep-alive through reloads")
		var only map[string]bool
		if o.kaServers != "" {
			only = map[string]bool{}
			for _, n := range strings.Split(o.kaServers, ",") {
				only[strings.TrimSpace(n)] = true
			}
		}
		kaRows = runKeepAlive(ctx, o.root, only, o.kaReps, rep)
	}
	stopAll(false)

	// Tables.
	if m != nil {
		rep.print(fmt.Sprintf("load: wrk -c%d GET /health, %v measured after %v warm-up, %d reps (round-robin over servers)\n",
			o.conns, o.dur, o.warmup, o.reps))
		rep.print("pinned: server on CPU 0 (taskset), wrk -t1 on CPU 1; unpinned: no affinity, wrk -t2\n")
		rep.print(fmt.Sprintf("noise = CPU that other processes on this shared machine took during a run, in %% of a core (worst of\n"+
			"the reps used); a run above %.0f%% is repeated once while time allows (%d repeated), and the columns\n"+
			"are medians over the quiet reps only (reps = quiet/all; all reps when none was quiet)\n", o.noiseLimit*100, m.retries))
		rep.print("spread = (max-min)/median of req/s; p50/p99 = medians of wrk's; errors = wrk's socket errors\n" +
			"(connect/read/write/timeout) + non-2xx/3xx, summed over all reps; ratio = req/s / go-single's;\n" +
			"primary = CPU of the supervisor (Node's primary) during the run, in % of a core;\n" +
			"cpu/req = CPU the server's processes spent per request (median): unlike req/s, about the same\n" +
			"whatever other processes take; wrk/req = wrk's own CPU per request (median);\n" +
			"idle = pinned: share of CPU 0 (the server's) left idle (median). With idle well above 0 and\n" +
			"wrk's CPU 1 busy, the client limits req/s, which then follows wrk/req more than the server\n\n")
		m.loadTable(servers, placements, o.reps, rep)
		m.rssTable(servers, placements, rep)
	}
	if lat != nil {
		lat.table(latServers, lo, rep)
	}
	if lc != nil {
		lc.table(o.samples, rep)
	}
	if kaRows != nil {
		kaTable(kaRows, o.kaReps, rep)
	}
	targets(m, lc, lat, rep)
	if m != nil {
		rep.print(anomalies("anomalies", m.notes, m.fails, func(k cellKey) string {
			return fmt.Sprintf("%s %s %s", k.server, k.placement, k.load)
		}))
	}

	if !o.noMicro && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "bench: go micro-benchmarks")
		micro(ctx, o, rep)
	}
	if ctx.Err() != nil {
		failed = errors.Join(failed, fmt.Errorf("bench: stopped early: %w", context.Cause(ctx)))
	}
	rep.print(fmt.Sprintf("harness wall time: %v\n", time.Since(began).Round(100*time.Millisecond)))

	path, err := writeResults(o, header, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: results in %s\n", path)
	if failed != nil {
		fmt.Fprintln(os.Stderr, failed)
		return 1
	}
	return 0
}

// microCost is the time kept for the micro-benchmarks after the load.
func microCost(o options) time.Duration {
	if o.noMicro {
		return 0
	}
	return 25 * time.Second
}

func validate(o options) error {
	whole := func(d time.Duration) bool { return d >= time.Second && d%time.Second == 0 }
	switch {
	case !whole(o.dur) || !whole(o.warmup):
		return fmt.Errorf("bench: -duration and -warmup must be whole seconds ≥ 1s (wrk takes seconds)")
	case o.reps < 1, o.samples < 1, o.conns < 1, o.workers < 2, o.kaReps < 1:
		return fmt.Errorf("bench: -reps, -samples, -ka-reps and -c must be ≥ 1 and -workers ≥ 2")
	case o.latSpin < 0 || o.latSpin > maxLatSpin || o.latSpin%time.Microsecond != 0:
		return fmt.Errorf("bench: -lat-spin must be whole microseconds between 0 and %v", maxLatSpin)
	}
	return nil
}

// preflight fails early, with what to do, when a tool or a binary is missing.
func preflight(o options) error {
	var missing []string
	for _, t := range []struct{ name, hint string }{
		{"wrk", "apt-get install -y wrk (make bench does it)"},
		{"node", "install Node.js (≥ 16) so that node is on PATH"},
		{"taskset", "apt-get install -y util-linux"},
	} {
		if _, err := exec.LookPath(t.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found: %s", t.name, t.hint))
		}
	}
	for _, f := range []string{"bin/supervisor", "bin/worker", "bin/singlebinary", "bin/fasthttp-worker", "bin/sdsocket", "bench/node/cluster.js", "bench/node/reload.js"} {
		if _, err := os.Stat(filepath.Join(o.root, f)); err != nil {
			missing = append(missing, fmt.Sprintf("%s missing (run make build from the repository root)", f))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("bench: cannot run:\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}

// environment describes the machine and tools, for the results file.
func environment(o options) string {
	var b strings.Builder
	b.WriteString("date: " + time.Now().Format(time.RFC3339) + "\n")
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		b.WriteString("kernel: " + strings.TrimSpace(string(rel)) + "\n")
	}
	if ci, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(ci); m != nil {
			fmt.Fprintf(&b, "cpu: %s × %d\n", m[1], runtime.NumCPU())
		}
	}
	for _, c := range [][]string{
		{o.goCmd, "version"}, {"wrk", "--version"}, {"node", "--version"},
		{"git", "-C", o.root, "rev-parse", "--short", "HEAD"},
	} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput() // wrk --version exits 1
		fmt.Fprintf(&b, "%s: %s\n", c[0], firstLine(string(out)))
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// micro runs the Go micro-benchmarks and prints their result lines. A
// package without benchmarks (or tests) is fine.
func micro(ctx context.Context, o options, rep *report) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	argv := []string{o.goCmd, "test", "-run", "^$", "-bench", ".", "-benchmem",
		"./internal/ipc/", "./internal/balancer/", "./internal/supervisor/"}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = o.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	var b strings.Builder
	b.WriteString("go micro-benchmarks: " + joinArgs(argv) + "\n")
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "ok") ||
			strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "?") || strings.HasPrefix(line, "pkg:") {
			b.WriteString("  " + strings.Join(strings.Fields(line), " ") + "\n")
		}
	}
	if err != nil {
		fmt.Fprintf(&b, "  (go test: %v; full output in the results file)\n", err)
	}
	b.WriteString("\n")
	rep.print(b.String())
	rep.raw("go micro-benchmarks, full output:\n$ %s\n%s", joinArgs(argv), out)
}

// writeResults writes the tables, then the raw section.
func writeResults(o options, header string, rep *report) (string, error) {
	dir := o.out
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(o.root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench: results: %w", err)
	}
	path := filepath.Join(dir, time.Now().Format("20060102-150405")+".txt")
	rep.mu.Lock()
	defer rep.mu.Unlock()
	text := header + "\n" + rep.tables.String() + "\n==== raw: wrk reports, server logs ====\n\n" + rep.raws.String()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("bench: results: %w", err)
	}
	return path, nil
}

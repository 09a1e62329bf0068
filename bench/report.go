package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// report collects what is printed (tables) and what only goes to the
// results file (raw wrk reports, server logs).
type report struct {
	w      io.Writer // stdout
	mu     sync.Mutex
	tables strings.Builder
	raws   strings.Builder
}

// print writes s to stdout and to the tables of the results file.
func (r *report) print(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.w, s)
	r.tables.WriteString(s)
}

// raw appends to the raw section of the results file only.
func (r *report) raw(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(&r.raws, format, a...)
	r.raws.WriteString("\n")
}

func itoa(n int) string { return strconv.Itoa(n) }

func joinArgs(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if strings.ContainsAny(a, " '\"$^*?") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func median[T int | int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(d)/1e6)
}

func mib(kb int) string {
	if kb == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

// loadTable prints the main table: medians over the quiet reps (all reps
// when none was quiet), ratio to the single Go process in the same
// placement and load.
func (m *matrix) loadTable(servers []serverSpec, pls []placement, reps int, rep *report) {
	var b strings.Builder
	nw := nameWidth(servers)
	fmt.Fprintf(&b, "%-*s  %-9s  %-9s  %8s  %4s  %6s  %8s  %8s  %6s  %5s  %7s  %7s  %7s  %5s  %5s\n",
		nw, "server", "placement", "load", "req/s", "reps", "spread", "p50", "p99", "errors", "ratio", "primary", "cpu/req", "wrk/req", "idle", "noise")
	for _, pl := range pls {
		for _, ld := range loads {
			base := median(rpsOf(m.quiet(cellKey{"go-single", pl.name, ld.name})))
			for _, sp := range servers {
				k := cellKey{sp.name, pl.name, ld.name}
				rs := m.quiet(k)
				if len(rs) == 0 {
					fmt.Fprintf(&b, "%-*s  %-9s  %-9s  %8s\n", nw, sp.name, pl.name, ld.name, "FAILED")
					continue
				}
				rps := rpsOf(rs)
				med := median(rps)
				spread := (slices.Max(rps) - slices.Min(rps)) / med * 100
				var p50, p99 []time.Duration
				var prim []float64
				var cpu, wrk []time.Duration
				var idle []float64
				var errs int64
				var noise float64
				for _, r := range m.runs[k] {
					errs += r.errors() // errors count in every run, quiet or not
				}
				for _, r := range rs {
					p50 = append(p50, r.p50)
					p99 = append(p99, r.p99)
					prim = append(prim, r.primaryCPU)
					cpu = append(cpu, r.serverCPU)
					wrk = append(wrk, r.clientCPU)
					idle = append(idle, r.serverIdle)
					noise = max(noise, r.noise)
				}
				ratio := "-"
				if base > 0 {
					ratio = fmt.Sprintf("%.2f", med/base)
				}
				primary := "-"
				if sp.procs > 1 {
					primary = fmt.Sprintf("%.0f%%", median(prim)*100)
				}
				idleCol := "-"
				if pl.pinned {
					idleCol = fmt.Sprintf("%.0f%%", median(idle)*100)
				}
				fmt.Fprintf(&b, "%-*s  %-9s  %-9s  %8.0f  %4s  %5.1f%%  %8s  %8s  %6d  %5s  %7s  %5.1fµs  %5.1fµs  %5s  %4.0f%%\n",
					nw, sp.name, pl.name, ld.name, med, fmt.Sprintf("%d/%d", len(rs), reps), spread,
					ms(median(p50)), ms(median(p99)), errs, ratio, primary,
					micros(median(cpu)), micros(median(wrk)), idleCol, noise*100)
			}
			b.WriteString("\n")
		}
	}
	rep.print(b.String())
}

// anomalies formats notes and the first line of every failure, under
// title, or returns "" when there are none.
func anomalies[K comparable](title string, notes []string, fails map[K][]string, label func(K) string) string {
	lines := slices.Clone(notes)
	for k, fs := range fails {
		for _, f := range fs {
			lines = append(lines, label(k)+": "+firstLine(f))
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return title + ":\n  " + strings.Join(lines, "\n  ") + "\n\n"
}

// nameWidth is the width of the server column: the longest name, at least 10.
func nameWidth(servers []serverSpec) int {
	w := 10
	for _, sp := range servers {
		w = max(w, len(sp.name))
	}
	return w
}

func rpsOf(rs []wrkResult) []float64 {
	var out []float64
	for _, r := range rs {
		out = append(out, r.rps)
	}
	return out
}

// ratio returns median req/s of server over the one of than, in a cell,
// over quiet runs as in the table.
func (m *matrix) ratio(server, than, pl, ld string) (float64, bool) {
	a := median(rpsOf(m.quiet(cellKey{server, pl, ld})))
	b := median(rpsOf(m.quiet(cellKey{than, pl, ld})))
	if a == 0 || b == 0 {
		return 0, false
	}
	return a / b, true
}

// cpuRatio returns the median CPU per request of server over the one of
// than, in a cell, over all runs: CPU per request hardly depends on noise.
func (m *matrix) cpuRatio(server, than, pl, ld string) (float64, bool) {
	cpu := func(name string) time.Duration {
		var ds []time.Duration
		for _, r := range m.runs[cellKey{name, pl, ld}] {
			ds = append(ds, r.serverCPU)
		}
		return median(ds)
	}
	a, b := cpu(server), cpu(than)
	if a == 0 || b == 0 {
		return 0, false
	}
	return float64(a) / float64(b), true
}

// p99 is the median p99 of a cell over its quiet runs, 0 without runs.
func (m *matrix) p99(server, pl, ld string) time.Duration {
	var ps []time.Duration
	for _, r := range m.quiet(cellKey{server, pl, ld}) {
		ps = append(ps, r.p99)
	}
	return median(ps)
}

// rssTable prints memory per server: medians over launches.
func (m *matrix) rssTable(servers []serverSpec, pls []placement, rep *report) {
	var b strings.Builder
	b.WriteString("memory: VmRSS in MiB, median over reps; root = supervisor / Node primary / the single Go process,\n")
	b.WriteString("worker = largest worker, total = root + all workers; load = peak during the measured runs\n")
	nw := nameWidth(servers)
	fmt.Fprintf(&b, "%-*s  %-9s  %6s %6s %6s   %6s %6s %6s   %11s\n",
		nw, "server", "placement", "idle:", "", "", "load:", "", "", "after load:")
	fmt.Fprintf(&b, "%-*s  %-9s  %6s %6s %6s   %6s %6s %6s   %11s\n",
		nw, "", "", "root", "worker", "total", "root", "worker", "total", "total")
	for _, pl := range pls {
		for _, sp := range servers {
			rr := m.rss[[2]string{sp.name, pl.name}]
			if rr == nil {
				continue
			}
			idle, load, after := medStat(rr.idle), medStat(rr.load), medStat(rr.after)
			fmt.Fprintf(&b, "%-*s  %-9s  %6s %6s %6s   %6s %6s %6s   %11s\n", nw, sp.name, pl.name,
				mib(idle.root), mib(idle.worker), mib(idle.total),
				mib(load.root), mib(load.worker), mib(load.total), mib(after.total))
		}
	}
	b.WriteString("\n")
	rep.print(b.String())
}

func medStat(ss []rssStat) rssStat {
	var r, w, t []int
	for _, s := range ss {
		r, w, t = append(r, s.root), append(w, s.worker), append(t, s.total)
	}
	return rssStat{median(r), median(w), median(t)}
}

// lifecycleTable prints the cold start and kill → replacement medians.
func (lc *lifecycle) table(samples int, rep *report) {
	var b strings.Builder
	fmt.Fprintf(&b, "lifecycle: median of %d [min–max]; unpinned; every sample a fresh launch\n", samples)
	fmt.Fprintf(&b, "%-34s  %-22s  %-22s  %s\n", "cold start (launch → ...)", "N pids answer GET /pid", "\"all workers ready\" read", "startup (self-reported)")
	for _, l := range lc.order {
		cs := lc.cold[l]
		if len(cs) == 0 {
			continue
		}
		var h, g, s []time.Duration
		for _, c := range cs {
			h, g, s = append(h, c.http), append(g, c.log), append(s, c.self)
		}
		fmt.Fprintf(&b, "%-34s  %-22s  %-22s  %s\n", l, spread(h), spread(g), ms(median(s)))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-34s  %-22s  %-10s  %-10s  %-10s  %s\n", "kill -9 of a worker (kill → ...)", "new pid answers /pid", "spawned", "ready", "boot(self)", "failed polls")
	for _, l := range lc.order {
		ks := lc.kill[l]
		if len(ks) == 0 {
			continue
		}
		var h, sp, rd, bt []time.Duration
		failed := 0
		for _, k := range ks {
			h, sp, rd, bt = append(h, k.http), append(sp, k.spawned), append(rd, k.ready), append(bt, k.boot)
			failed += k.failed
		}
		fmt.Fprintf(&b, "%-34s  %-22s  %-10s  %-10s  %-10s  %d in %d kills\n", l, spread(h),
			ms(median(sp)), ms(median(rd)), ms(median(bt)), failed, len(ks))
	}
	for _, n := range lc.notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	b.WriteString("\n")
	rep.print(b.String())
}

// spread formats a median with its range.
func spread(ds []time.Duration) string {
	if len(ds) == 0 || slices.Max(ds) == 0 {
		return "-"
	}
	return fmt.Sprintf("%s [%.1f–%.1f]", ms(median(ds)), float64(slices.Min(ds))/1e6, float64(slices.Max(ds))/1e6)
}

// stickyPairs are the sticky and PROXY rows and the rows they are held
// against: stickiness against rr without it, and -sticky ip behind PROXY
// headers (many clients) against rr with and without them, so that what
// the header costs shows apart from what the key does.
var stickyPairs = [][2]string{{"rr-sticky-cookie", "rr"}, {"rr-sticky-ip", "rr"}, {"rr-sticky-ip", "rr-proxy"}, {"rr-proxy", "rr"}}

// targets checks the numbers against the goals the project set itself.
func targets(m *matrix, lc *lifecycle, lat *openLoop, rep *report) {
	var b strings.Builder
	b.WriteString("targets (ratios are of median req/s in the same run, pinned unless named; reported, not asserted):\n")
	check := func(what string, have float64, ok bool, cmp string, want float64, unit string) {
		if !ok {
			fmt.Fprintf(&b, "  %-56s  %10s\n", what, "n/a")
			return
		}
		pass := have >= want
		if cmp == "≤" {
			pass = have <= want
		}
		verdict := "MISS"
		if pass {
			verdict = "ok"
		}
		fmt.Fprintf(&b, "  %-56s  %8.2f%-2s  (want %s %g%s)  %s\n", what, have, unit, cmp, want, unit, verdict)
	}
	if m != nil {
		r, ok := m.ratio("rr", "go-single", "pinned", "keepalive")
		check("rr keep-alive / go-single", r, ok, "≥", 0.95, "")
		r, ok = m.ratio("rr", "go-single", "pinned", "close")
		check("rr close / go-single", r, ok, "≥", 0.85, "")
		r, ok = m.ratio("rr", "node-rr", "pinned", "close")
		check("rr close / node-rr close", r, ok, "≥", 2, "")
		for _, pl := range placements {
			for _, ld := range loads {
				for _, c := range stickyPairs {
					r, ok = m.ratio(c[0], c[1], pl.name, ld.name)
					check(fmt.Sprintf("%s %s / %s (%s)", c[0], ld.name, c[1], pl.name), r, ok, "≥", 0.9, "")
				}
			}
		}
		// The same in CPU per request, pinned (the server CPU-bound on
		// its core): 0.9× the rate is 1/0.9 the CPU.
		for _, ld := range loads {
			for _, c := range stickyPairs {
				r, ok = m.cpuRatio(c[0], c[1], "pinned", ld.name)
				check(fmt.Sprintf("%s %s CPU/request / %s's", c[0], ld.name, c[1]), r, ok, "≤", 1.11, "")
			}
		}
		// Two TCP listeners loaded at once: the supervisor's accept loops
		// together keep rr's rate (not halved).
		for _, ld := range loads {
			r, ok = m.ratio("rr-2ports", "rr", "pinned", ld.name)
			check(fmt.Sprintf("rr two listeners %s / rr", ld.name), r, ok, "≥", 0.9, "")
		}
		r, ok = m.ratio("shared", "go-single", "pinned", "close")
		check("shared close / go-single", r, ok, "≥", 0.95, "")
		r, ok = m.ratio("reuseport", "go-single", "pinned", "close")
		check("reuseport close / go-single", r, ok, "≥", 0.95, "")
		// The same Node handler, under prefork instead of Node's primary.
		for _, pl := range placements {
			for _, mode := range []string{"rr", "shared", "reuseport"} {
				r, ok = m.ratio("prefork-node-"+mode, "node-rr", pl.name, "close")
				check(fmt.Sprintf("node %s close / node-rr (%s)", mode, pl.name), r, ok, "≥", 2, "")
				r, ok = m.ratio("prefork-node-"+mode, "node-rr", pl.name, "keepalive")
				check(fmt.Sprintf("node %s keep-alive / node-rr (%s)", mode, pl.name), r, ok, "≥", 1, "")
			}
		}
		// The fasthttp worker under prefork against the same binary under
		// fasthttp's own prefork, and rr against shared with keep-alive.
		for _, pl := range placements {
			for _, ld := range loads {
				for _, mode := range []string{"rr", "shared", "reuseport"} {
					r, ok = m.ratio("fasthttp-"+mode, "fasthttp-prefork", pl.name, ld.name)
					check(fmt.Sprintf("fasthttp %s %s / fasthttp-prefork (%s)", mode, ld.name, pl.name), r, ok, "≥", 0.95, "")
				}
			}
			r, ok = m.ratio("fasthttp-rr", "fasthttp-shared", pl.name, "keepalive")
			check(fmt.Sprintf("fasthttp rr keep-alive / fasthttp shared (%s)", pl.name), r, ok, "≥", 0.95, "")
		}
		// The same comparison in CPU per request, which other processes
		// on a shared machine disturb much less than req/s.
		for _, ld := range loads {
			for _, mode := range []string{"rr", "shared", "reuseport"} {
				r, ok = m.cpuRatio("fasthttp-"+mode, "fasthttp-prefork", "pinned", ld.name)
				check(fmt.Sprintf("fasthttp %s %s CPU/request / fasthttp-prefork's", mode, ld.name), r, ok, "≤", 1.05, "")
			}
		}
		// Closed loop at saturation, the figure: unpinned keep-alive.
		for _, mode := range []string{"rr", "shared", "reuseport"} {
			p, node := m.p99(mode, "unpinned", "keepalive"), m.p99("node-rr", "unpinned", "keepalive")
			check(fmt.Sprintf("closed keep-alive p99 (unpinned): %s / node-rr", mode),
				float64(p)/float64(node), p > 0 && node > 0, "≤", 1, "×")
		}
	}
	if lat != nil {
		lat.targets(check)
	}
	if lc != nil {
		var h, k []time.Duration
		for _, c := range lc.cold["rr, 2 workers"] {
			h = append(h, c.http)
		}
		for _, c := range lc.kill["rr, 2 workers"] {
			k = append(k, c.http)
		}
		check("cold start, 2 workers (HTTP, median)", float64(median(h))/1e6, len(h) > 0, "≤", 20, "ms")
		check("kill → replacement serving (HTTP, median)", float64(median(k))/1e6, len(k) > 0, "≤", 15, "ms")
	}
	if m != nil {
		// Idle memory: the worst median over modes and placements.
		sup, wrk := 0, 0
		for key, rr := range m.rss {
			if key[0] == "rr" || key[0] == "shared" || key[0] == "reuseport" {
				st := medStat(rr.idle)
				sup, wrk = max(sup, st.root), max(wrk, st.worker)
			}
		}
		check("idle RSS supervisor (worst mode)", float64(sup)/1024, sup > 0, "≤", 15, "MiB")
		check("idle RSS worker (worst mode)", float64(wrk)/1024, wrk > 0, "≤", 15, "MiB")
	}
	b.WriteString("\n")
	rep.print(b.String())
}

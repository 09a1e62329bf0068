package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prefork/prefork/internal/procfs"
)

// The machine is shared: other people's builds and tests run while the
// harness measures, and a 2-core box has no spare core to absorb them. So
// each measured run also records how much CPU went to everything else:
// user+system time of the whole machine (/proc/stat) minus that of the
// server's processes, of wrk and of the harness. Interrupt and softirq time
// (the loopback traffic itself) are left out on both sides, and steal (the
// hypervisor's share) is reported apart.

// clockTicks is USER_HZ, the unit of /proc/stat as of /proc/PID/stat.
const clockTicks = procfs.ClockTicks

// cpuSnap is the machine's and our processes' CPU time at one instant.
type cpuSnap struct {
	at    time.Time
	busy  uint64 // user + nice + system, all CPUs, in ticks
	steal uint64
	ours  uint64 // utime + stime of the watched pids
	procs map[int]procTime
	idle  map[string]uint64 // idle + iowait ticks by CPU ("cpu0", ...)
}

// procTime is one process's CPU time, to name who made the noise.
type procTime struct {
	comm  string
	ticks uint64
}

func snapCPU(pids []int) cpuSnap {
	s := cpuSnap{at: time.Now()}
	b, _ := os.ReadFile("/proc/stat")
	s.busy, s.steal, s.idle = parseStat(string(b))
	for _, pid := range pids {
		s.ours += procTicks(pid)
	}
	s.procs = map[int]procTime{}
	all, _ := procfs.PIDs()
	for _, pid := range all {
		st, _ := procfs.ReadStat(pid) // zero once pid is gone
		s.procs[pid] = procTime{st.Comm, st.CPUTicks()}
	}
	return s
}

// parseStat reads /proc/stat: user+nice+system and steal of all CPUs (the
// "cpu" line), and idle+iowait of each ("cpu0", "cpu1", ...), in ticks.
func parseStat(stat string) (busy, steal uint64, idle map[string]uint64) {
	idle = map[string]uint64{}
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		if len(f) <= 8 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		if f[0] != "cpu" {
			idle[f[0]] = n(4) + n(5)
			continue
		}
		busy = n(1) + n(2) + n(3) // not irq, softirq: see above
		steal = n(8)
	}
	return busy, steal, idle
}

// busiest names the processes outside pids that used the most CPU between
// a and b (those using at least 5% of a core), e.g. "compile 62%, node 20%".
func busiest(a, b cpuSnap, pids []int) string {
	ours := map[int]bool{}
	for _, p := range pids {
		ours[p] = true
	}
	secs := b.at.Sub(a.at).Seconds()
	type use struct {
		name string
		frac float64
	}
	var us []use
	for pid, pt := range b.procs {
		if ours[pid] || pt.comm == "wrk" || pt.comm == "taskset" {
			continue
		}
		d := pt.ticks - a.procs[pid].ticks // a new process counts in full
		if f := float64(d) / clockTicks / secs; f >= 0.05 {
			us = append(us, use{fmt.Sprintf("%s[%d]", pt.comm, pid), f})
		}
	}
	sort.Slice(us, func(i, j int) bool { return us[i].frac > us[j].frac })
	var parts []string
	for i, u := range us {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", u.name, u.frac*100))
	}
	return strings.Join(parts, ", ")
}

// procTicks returns utime + stime of pid, 0 once it is gone.
func procTicks(pid int) uint64 {
	st, _ := procfs.ReadStat(pid)
	return st.CPUTicks()
}

// noise is the CPU, in cores, that went to other processes between a and b,
// given extra (wrk's CPU time, from its rusage), and the steal in cores.
func noise(a, b cpuSnap, extra time.Duration) (other, steal float64) {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return 0, 0
	}
	busy := float64(b.busy - a.busy)
	ours := float64(b.ours-a.ours) + extra.Seconds()*clockTicks
	other = max(busy-ours, 0) / clockTicks / secs
	steal = float64(b.steal-a.steal) / clockTicks / secs
	return other, steal
}

// idleShare is the share of cpu's time (cpu0, ...) left idle between a and
// b: in a pinned run, what the server's core had to spare. A server that
// leaves its core idle while wrk keeps its own busy is not what limits
// req/s there: the client is.
func idleShare(a, b cpuSnap, cpu string) float64 {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(b.idle[cpu]-a.idle[cpu]) / clockTicks / secs
}

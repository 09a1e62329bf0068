package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// runqWait sums, over every thread of pids, the time spent runnable but
// waiting for a CPU: the second field of /proc/PID/task/TID/schedstat, in
// ns (CONFIG_SCHED_INFO). Where p99 swings with every burst of others'
// work on a shared machine, this mean moves much less, and it is what the
// scheduling policy changes: a SCHED_BATCH thread woken while another
// runs on its CPU does not preempt it, and waits for the tick.
func runqWait(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/task"
		tids, err := os.ReadDir(dir)
		if err != nil {
			continue // gone
		}
		for _, t := range tids {
			b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
			if err != nil {
				continue
			}
			total += runDelay(string(b))
		}
	}
	return total
}

// runDelay reads the run-queue wait from one schedstat line: "cpu_ns
// wait_ns timeslices".
func runDelay(line string) time.Duration {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(ns)
}

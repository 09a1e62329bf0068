package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/procfs"
)

// running reports whether p still runs: its pid names the same process
// (the start time, in clock ticks since boot, tells it from a later one that
// reused the pid, so the harness never signals a stranger), not a zombie.
// Zombies count as dead: the container's pid 1 may never reap orphans, and
// a zombie holds no port and no memory.
func running(p procfs.Stat) bool {
	q, err := procfs.ReadStat(p.PID)
	return err == nil && q.StartTime == p.StartTime && !q.Exited()
}

// descendants returns every live process below root, found by scanning
// /proc for parent links (the kernel's per-task children file is not always
// compiled in).
func descendants(root int) []procfs.Stat {
	pids, err := procfs.PIDs()
	if err != nil {
		return nil
	}
	byParent := map[int][]procfs.Stat{}
	for _, pid := range pids {
		p, err := procfs.ReadStat(pid)
		if err != nil || p.State == 'Z' {
			continue
		}
		byParent[p.PPID] = append(byParent[p.PPID], p)
	}
	var out []procfs.Stat
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range byParent[pid] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
	}
	return out
}

// rssKB returns VmRSS of pid in KiB.
func rssKB(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("bench: /proc/%d/status: no VmRSS", pid)
}

// killProc sends SIGKILL to p, and to its process group when p leads one
// (the supervisor starts each worker in a group of its own), unless p has
// gone or its pid now names another process.
func killProc(p procfs.Stat) {
	if !running(p) {
		return
	}
	syscall.Kill(p.PID, syscall.SIGKILL)
	if p.PGRP == p.PID {
		syscall.Kill(-p.PID, syscall.SIGKILL)
	}
}

// waitGone polls until none of ps is alive or d passes, and returns those
// still alive.
func waitGone(ps []procfs.Stat, d time.Duration) []procfs.Stat {
	deadline := time.Now().Add(d)
	for {
		var left []procfs.Stat
		for _, p := range ps {
			if running(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

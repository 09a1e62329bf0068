package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc identifies one process. start (field 22 of /proc/PID/stat, in clock
// ticks since boot) tells a process from a later one that reused its pid, so
// the harness never signals a stranger.
type proc struct {
	pid   int
	ppid  int
	pgrp  int
	state byte
	start uint64
}

// readProc parses /proc/PID/stat. The command name (field 2) may hold spaces
// and parentheses, so the fields are taken after its last ')'.
func readProc(pid int) (proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, fmt.Errorf("bench: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 {
		return proc{}, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f))
	}
	p := proc{pid: pid, state: f[0][0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgrp, _ = strconv.Atoi(f[2])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, nil
}

// alive reports whether p still runs: same pid and start time, and not a
// zombie. Zombies count as dead: the container's pid 1 may never reap
// orphans, and a zombie holds no port and no memory.
func (p proc) alive() bool {
	q, err := readProc(p.pid)
	return err == nil && q.start == p.start && q.state != 'Z' && q.state != 'X'
}

// descendants returns every live process below root, found by scanning
// /proc for parent links (the kernel's per-task children file is not always
// compiled in).
func descendants(root int) []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	byParent := map[int][]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := readProc(pid)
		if err != nil || p.state == 'Z' {
			continue
		}
		byParent[p.ppid] = append(byParent[p.ppid], p)
	}
	var out []proc
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range byParent[pid] {
			out = append(out, c)
			queue = append(queue, c.pid)
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
func killProc(p proc) {
	if !p.alive() {
		return
	}
	syscall.Kill(p.pid, syscall.SIGKILL)
	if p.pgrp == p.pid {
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}

// waitGone polls until none of ps is alive or d passes, and returns those
// still alive.
func waitGone(ps []proc, d time.Duration) []proc {
	deadline := time.Now().Add(d)
	for {
		var left []proc
		for _, p := range ps {
			if p.alive() {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

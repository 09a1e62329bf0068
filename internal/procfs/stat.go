package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ClockTicks is the kernel's USER_HZ, the unit of the CPU times and the
// start time in /proc/PID/stat: 100 on every Linux architecture Go supports,
// whatever the kernel's own HZ.
const ClockTicks = 100

// ErrMalformed is wrapped by the error for a stat line that does not parse.
var ErrMalformed = errors.New("procfs: malformed stat line")

// Stat is the part of /proc/PID/stat (proc_pid_stat(5)) that prefork uses.
type Stat struct {
	PID        int    // field 1
	Comm       string // field 2, without its parentheses; at most 15 bytes
	State      byte   // field 3: R, S, D, T, t, Z, X, ...
	PPID       int    // field 4
	PGRP       int    // field 5
	UTime      uint64 // field 14, user CPU time in ClockTicks
	STime      uint64 // field 15, system CPU time in ClockTicks
	NumThreads int    // field 20
	StartTime  uint64 // field 22, in ClockTicks after boot: tells a process from a later one with its pid
	RSSPages   int64  // field 24, resident set size in pages
}

// CPUTicks returns the user plus system CPU time in ClockTicks.
func (s Stat) CPUTicks() uint64 { return s.UTime + s.STime }

// Exited reports whether the process has exited: a zombie (Z) that its
// parent has not waited for yet, or dead (X).
func (s Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' }

// ReadStat reads and parses /proc/PID/stat. The error wraps fs.ErrNotExist
// when no process has that pid.
func ReadStat(pid int) (Stat, error) {
	return readStat("/proc/" + strconv.Itoa(pid) + "/stat")
}

// ReadTaskStat reads and parses /proc/PID/task/TID/stat, the stat line of
// one thread; its State is that thread's.
func ReadTaskStat(pid, tid int) (Stat, error) {
	return readStat("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
}

func readStat(path string) (Stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// os.ReadFile's error already names the path.
		return Stat{}, fmt.Errorf("procfs: %w", err)
	}
	s, err := ParseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("%w (%s)", err, path)
	}
	return s, nil
}

// ParseStat parses one stat line: "PID (COMM) STATE PPID PGRP ...".
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	// comm may itself contain ')', but the kernel prints nothing after it
	// but numbers and the state letter: the last ')' closes it.
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return Stat{}, fmt.Errorf("%w: no (command name)", ErrMalformed)
	}
	var s Stat
	var err error
	if s.PID, err = strconv.Atoi(string(bytes.TrimSpace(b[:open]))); err != nil {
		return Stat{}, fmt.Errorf("%w: pid: %w", ErrMalformed, err)
	}
	s.Comm = string(b[open+1 : end])
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3, so field n is f[n-3]; rss (24) is the last one read.
	if len(f) < 24-2 {
		return Stat{}, fmt.Errorf("%w: %d fields after the command name, want at least %d", ErrMalformed, len(f), 24-2)
	}
	if len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%w: state %q", ErrMalformed, f[0])
	}
	s.State = f[0][0]
	p := parser{f: f}
	s.PPID = p.int(4)
	s.PGRP = p.int(5)
	s.UTime = p.uint(14)
	s.STime = p.uint(15)
	s.NumThreads = p.int(20)
	s.StartTime = p.uint(22)
	s.RSSPages = int64(p.int(24))
	if p.err != nil {
		return Stat{}, p.err
	}
	return s, nil
}

// parser reads numbered stat fields and keeps the first error.
type parser struct {
	f   [][]byte
	err error
}

func (p *parser) int(field int) int {
	n, err := strconv.ParseInt(string(p.f[field-3]), 10, 64)
	p.fail(field, err)
	return int(n)
}

func (p *parser) uint(field int) uint64 {
	n, err := strconv.ParseUint(string(p.f[field-3]), 10, 64)
	p.fail(field, err)
	return n
}

func (p *parser) fail(field int, err error) {
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("%w: field %d: %w", ErrMalformed, field, err)
	}
}

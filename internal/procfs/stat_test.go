package procfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tail is fields 6 to 52 of a real stat line (session ... exit_code), with
// utime 14 = 7, stime 15 = 3, num_threads 20 = 5, starttime 22 = 123456 and
// rss 24 = 2048 at the positions that matter.
const tail = "1 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 123456 1000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0\n"

func TestParseStat(t *testing.T) {
	want := func(pid int, comm string, state byte, ppid, pgrp int) Stat {
		return Stat{PID: pid, Comm: comm, State: state, PPID: ppid, PGRP: pgrp,
			UTime: 7, STime: 3, NumThreads: 5, StartTime: 123456, RSSPages: 2048}
	}
	for _, tc := range []struct {
		in   string
		want Stat
	}{
		{"42 (worker) S 7 42 " + tail, want(42, "worker", 'S', 7, 42)},
		{"42 (two words) R 3 9 " + tail, want(42, "two words", 'R', 3, 9)},
		{"42 (a) b) (c) Z 1 42 " + tail, want(42, "a) b) (c", 'Z', 1, 42)},
		{"42 () S 1 1 " + tail, want(42, "", 'S', 1, 1)},
		{"42 ((sd-pam)) S 1 1 " + tail, want(42, "(sd-pam)", 'S', 1, 1)},
		{"42 (x) 1 2 3) T 1 1 " + tail, want(42, "x) 1 2 3", 'T', 1, 1)},
		{"42 (new\nline) S 1 1 " + tail, want(42, "new\nline", 'S', 1, 1)},
		{"4194304 (kworker/0:1H) I 2 0 " + tail, want(4194304, "kworker/0:1H", 'I', 2, 0)},
	} {
		have, err := ParseStat([]byte(tc.in))
		if err != nil {
			t.Errorf("ParseStat(%q): %v", tc.in, err)
			continue
		}
		if have != tc.want {
			t.Errorf("ParseStat(%q):\nwant %+v\nhave %+v", tc.in, tc.want, have)
		}
	}
}

func TestParseStatMalformed(t *testing.T) {
	for _, in := range []string{
		"",
		"42 (no close paren S 7 42 " + tail,
		"42 no parens S 7 42 " + tail,
		"(nopid) S 7 42 " + tail,
		"x (comm) S 7 42 " + tail,
		"42 (x) S",                       // truncated after the state
		"42 (x) S 7 42 1 0 -1",           // truncated before utime
		"42 (x) SS 7 42 " + tail,         // state is one letter
		"42 (x) S notanumber 42 " + tail, // ppid
		"42 (x) S 7 42 " + strings.Replace(tail, " 7 3 ", " -7 3 ", 1), // utime is unsigned
	} {
		if have, err := ParseStat([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseStat(%q): want ErrMalformed, have %+v, %v", in, have, err)
		}
	}
}

// cpuTime is this process's user plus system CPU time, from getrusage.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestReadStatSelf(t *testing.T) {
	// Burn CPU so that the CPU times are far from zero, bounded in time.
	for deadline := time.Now().Add(10 * time.Second); cpuTime(t) < 200*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatal("did not get 200ms of CPU in 10s")
		}
	}
	before := cpuTime(t)
	have, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after := cpuTime(t)
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(string(comm), "\n"); have.Comm != want {
		t.Errorf("Comm: want %q, have %q", want, have.Comm)
	}
	if have.PID != os.Getpid() || have.PPID != os.Getppid() || have.PGRP != syscall.Getpgrp() {
		t.Errorf("want pid %d, ppid %d, pgrp %d; have %+v", os.Getpid(), os.Getppid(), syscall.Getpgrp(), have)
	}
	// The state is the main thread's, which may be asleep while another
	// thread runs this goroutine.
	if have.State != 'R' && have.State != 'S' || have.Exited() {
		t.Errorf("State: want R or S, have %q", have.State)
	}
	if have.NumThreads < 1 || have.StartTime == 0 || have.RSSPages <= 0 {
		t.Errorf("want threads, start time and RSS, have %+v", have)
	}
	// getrusage reads the same per-task counters as stat, in microseconds:
	// wrong fields or a wrong ClockTicks would be off by far more than two
	// ticks of rounding.
	const slack = 2 * time.Second / ClockTicks
	stat := time.Duration(have.CPUTicks()) * time.Second / ClockTicks
	if stat < before-slack || stat > after+slack {
		t.Errorf("CPU time: getrusage says %v to %v, stat %v (%d ticks)", before, after, stat, have.CPUTicks())
	}
}

func TestReadTaskStat(t *testing.T) {
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := strconv.Atoi(tids[0].Name())
	have, err := ReadTaskStat(os.Getpid(), tid)
	if err != nil {
		t.Fatal(err)
	}
	if have.PID != tid || have.PPID != os.Getppid() {
		t.Errorf("want tid %d, ppid %d; have %+v", tid, os.Getppid(), have)
	}
}

func TestReadStatGone(t *testing.T) {
	// pid_max is at most 4194304 (2^22), so this pid never exists.
	_, err := ReadStat(1 << 23)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "procfs: ") {
		t.Fatalf("want a procfs: error wrapping fs.ErrNotExist, have %v", err)
	}
}

func TestPIDs(t *testing.T) {
	pids, err := PIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{os.Getpid(), os.Getppid()} {
		if !slices.Contains(pids, want) {
			t.Errorf("PIDs: %d missing from %d pids", want, len(pids))
		}
	}
	for _, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pid %d: %v", pid, err)
		}
	}
}

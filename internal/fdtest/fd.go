package fdtest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
)

// Targets returns pid's open descriptors and what each refers to, as
// readlink of /proc/PID/fd/N shows it: a path, "socket:[INODE]",
// "pipe:[INODE]", "anon_inode:[eventpoll]", ... When pid is this process, the
// descriptor Targets itself opens to read the directory is left out.
func Targets(pid int) (map[int]string, error) {
	dir, fds, err := read(pid)
	if err != nil {
		return nil, err
	}
	targets := make(map[int]string, len(fds))
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + strconv.Itoa(fd))
		if err != nil {
			continue // closed since the directory was read
		}
		targets[fd] = target
	}
	return targets, nil
}

// List describes pid's open descriptors as "N -> target" (see Targets), in
// the order of N.
func List(pid int) ([]string, error) {
	targets, err := Targets(pid)
	if err != nil {
		return nil, err
	}
	fds := make([]int, 0, len(targets))
	for fd := range targets {
		fds = append(fds, fd)
	}
	slices.Sort(fds)
	list := make([]string, len(fds))
	for i, fd := range fds {
		list[i] = strconv.Itoa(fd) + " -> " + targets[fd]
	}
	return list, nil
}

// Count returns how many descriptors pid has open; like Targets, it does not
// count its own.
func Count(pid int) (int, error) {
	_, fds, err := read(pid)
	return len(fds), err
}

// Open is how many descriptors this process has open, for a test that
// checks it leaks none; it fails tb if they cannot be read.
func Open(tb testing.TB) int {
	tb.Helper()
	n, err := Count(os.Getpid())
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// read returns /proc/PID/fd and the descriptor numbers in it.
func read(pid int) (dir string, fds []int, err error) {
	dir = "/proc/" + strconv.Itoa(pid) + "/fd"
	d, err := os.Open(dir)
	if err != nil {
		return "", nil, fmt.Errorf("fdtest: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return "", nil, fmt.Errorf("fdtest: read %s: %w", dir, err)
	}
	own := -1
	if pid == os.Getpid() {
		// The open directory is one of our descriptors and lists itself.
		// (Fd makes it blocking, which means nothing for a directory.)
		own = int(d.Fd())
	}
	fds = make([]int, 0, len(names))
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil && fd != own {
			fds = append(fds, fd)
		}
	}
	return dir, fds, nil
}

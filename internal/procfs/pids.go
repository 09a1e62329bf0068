package procfs

import (
	"fmt"
	"os"
	"strconv"
)

// PIDs lists the pids in /proc: every process in this pid namespace, in no
// particular order. Processes come and go while it reads, so a ReadStat of
// one of them may find it gone.
func PIDs() ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("procfs: read /proc: %w", err)
	}
	pids := make([]int, 0, len(names))
	for _, name := range names {
		// Everything else in /proc (self, net, sys, ...) is not a number.
		if pid, err := strconv.Atoi(name); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Alive reports whether pid is a running process: it exists and is not a
// zombie waiting to be reaped.
func Alive(pid int) bool {
	st, err := ReadStat(pid)
	return err == nil && !st.Exited()
}

// Children lists the running (not zombie) processes whose parent is ppid.
func Children(ppid int) []int {
	pids, _ := PIDs()
	var out []int
	for _, pid := range pids {
		if st, err := ReadStat(pid); err == nil && st.PPID == ppid && !st.Exited() {
			out = append(out, pid)
		}
	}
	return out
}

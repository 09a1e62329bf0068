// Package procfs reads the process facts prefork needs from Linux's /proc:
// one parser for /proc/PID/stat, and the list of pids.
//
// The second field of a stat line is the command name in parentheses, and
// any process can rename itself to contain spaces and parentheses (prctl
// PR_SET_NAME), so the fields after it are counted from the last ')'.
//
//	st, err := procfs.ReadStat(pid)
//	if err != nil { ... }         // wraps fs.ErrNotExist once the pid is gone
//	if st.PPID == os.Getpid() && !st.Exited() { ... }
//	cpu := float64(st.CPUTicks()) / procfs.ClockTicks // seconds
//
// Linux only.
package procfs

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS

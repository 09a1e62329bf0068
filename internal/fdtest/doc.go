// Package fdtest lets tests see a process's open file descriptors, to prove
// that nothing leaks: not a received SCM_RIGHTS descriptor, not a closed
// connection, not a worker's pipe.
//
//	before, err := fdtest.List(os.Getpid())
//	// ... the code under test opens and closes descriptors ...
//	after, err := fdtest.List(os.Getpid())
//	// compare: each entry reads "7 -> socket:[123456]"
//
// It reads /proc/PID/fd, so it sees another process's descriptors only with
// the right to ptrace it (the same user, normally).
//
// Linux only.
package fdtest

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS

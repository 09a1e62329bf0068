//go:build !linux

package sdnotify

// monotonicUsec reports false: systemd exists only on Linux, so there is no
// MONOTONIC_USEC for anyone to read.
func monotonicUsec() (uint64, bool) { return 0, false }

package supervisor

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// accept4 accepts one connection without asking for the peer address:
// unix.Accept4 would decode it into a freshly allocated Sockaddr, and the
// supervisor never looks at it. The new descriptor is close-on-exec (a worker
// spawned meanwhile must not inherit it) and non-blocking: the flag belongs
// to the open file, which the worker shares once it receives a duplicate,
// so the worker registers it with its poller without another fcntl.
func accept4(fd int) (int, error) {
	nfd, _, errno := syscall.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

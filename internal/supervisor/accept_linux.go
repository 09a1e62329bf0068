package supervisor

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// accept4 accepts one connection without asking for the peer address:
// unix.Accept4 would decode it into a freshly allocated Sockaddr, and the
// supervisor never looks at it. The new descriptor is close-on-exec (a worker
// spawned meanwhile must not inherit it) and left in blocking mode on
// purpose: the worker wraps what it receives with os.NewFile, which
// registers a non-blocking descriptor with its poller (and deregisters it
// again when net.FileConn's duplicate replaces it) — two epoll_ctl calls per
// connection for nothing. net.FileConn makes the connection non-blocking.
func accept4(fd int) (int, error) {
	nfd, _, errno := syscall.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

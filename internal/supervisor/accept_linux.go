package supervisor

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// accept4 accepts one connection without asking for the peer address:
// unix.Accept4 would decode it into a freshly allocated Sockaddr, and the
// supervisor never looks at it. The new descriptor is non-blocking (the
// worker's poller wants it so) and close-on-exec (a worker spawned meanwhile
// must not inherit it).
func accept4(fd int) (int, error) {
	nfd, _, errno := syscall.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

package supervisor

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// accept4 accepts one connection and writes its peer address to sa.
// (unix.Accept4 would decode the address into a freshly allocated Sockaddr
// on every call.) The new descriptor is close-on-exec (a worker spawned
// meanwhile must not inherit it) and non-blocking: the flag belongs to the
// open file, which the worker shares once it receives a duplicate, so the
// worker registers it with its poller without another fcntl.
func accept4(fd int, sa *unix.RawSockaddrAny) (int, error) {
	n := uint32(unix.SizeofSockaddrAny)
	nfd, _, errno := syscall.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

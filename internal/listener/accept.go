package listener

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Accept4 accepts one connection on the listening socket fd and writes its
// peer address to sa (unix.Accept4 would decode the address into a freshly
// allocated Sockaddr on every call; ipc.PeerOf reads sa as it is). The new
// descriptor is close-on-exec (a worker spawned meanwhile must not inherit
// it) and non-blocking: the flag belongs to the open file, which a worker
// shares once it receives a duplicate, so it registers the connection with
// its poller without another fcntl. The supervisor's accept loop and the
// workers' (shared and reuseport) both use it.
func Accept4(fd int, sa *unix.RawSockaddrAny) (int, error) {
	n := uint32(unix.SizeofSockaddrAny)
	// RawSyscall: on a non-blocking socket accept4 returns at once, and
	// Syscall's bookkeeping would wake the runtime's sysmon thread on the
	// first accept after an idle moment, a context switch or more per
	// connection when the supervisor shares one CPU with its workers.
	nfd, _, errno := syscall.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

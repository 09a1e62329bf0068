package nodeipc

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The syscalls a connection costs in rr mode, made without the runtime's
// syscall bookkeeping (RawSyscall). Each is on a non-blocking socket, or
// closes a socket without SO_LINGER, and returns at once; through
// Syscall, the first of them after the process was idle wakes the
// runtime's sysmon thread, which then polls every 20µs for a while: a
// context switch or more per connection, on the CPU the workers share
// when the supervisor is pinned with them.

// rawSendmsg sends p with the control message oob on socket s.
func rawSendmsg(s int, p, oob []byte, flags int) (int, error) {
	var msg unix.Msghdr
	iov := unix.Iovec{Base: unsafe.SliceData(p)}
	iov.SetLen(len(p))
	msg.Iov, msg.Iovlen = &iov, 1
	if len(oob) > 0 {
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	n, _, errno := syscall.RawSyscall(unix.SYS_SENDMSG, uintptr(s), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// rawRecvmsg reads into p and oob from socket s, descriptors close-on-exec
// (MSG_CMSG_CLOEXEC: one received here must not leak into a child spawned
// meanwhile). It returns the bytes and control bytes read.
func rawRecvmsg(s int, p, oob []byte) (int, int, error) {
	var msg unix.Msghdr
	iov := unix.Iovec{Base: unsafe.SliceData(p)}
	iov.SetLen(len(p))
	msg.Iov, msg.Iovlen = &iov, 1
	if len(oob) > 0 {
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	n, _, errno := syscall.RawSyscall(unix.SYS_RECVMSG, uintptr(s), uintptr(unsafe.Pointer(&msg)), unix.MSG_CMSG_CLOEXEC)
	if errno != 0 {
		return 0, 0, errno
	}
	return int(n), int(msg.Controllen), nil
}

// rawClose closes a connection's descriptor.
func rawClose(fd int) {
	syscall.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

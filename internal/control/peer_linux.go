package control

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCred returns the pid and effective uid of the process that connected
// c, as the kernel recorded them at connect(2) (SO_PEERCRED): a peer cannot
// forge them, and a later setuid in the peer does not change them.
func peerCred(c *net.UnixConn) (pid, uid int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, serr
	}
	return int(cred.Pid), int(cred.Uid), nil
}

// hungUp reports whether the peer of c has closed the connection entirely,
// as opposed to only shutting down its write side (as socat does once its
// input ends, while it still waits for the answer). Both read as EOF; for a
// unix stream socket the kernel adds POLLHUP only when both directions are
// shut, which a full close of the peer does.
func hungUp(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	hup := true
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, 0) // timeout 0: never blocks
			if err == unix.EINTR {
				continue
			}
			hup = err != nil || fds[0].Revents&unix.POLLHUP != 0
			return
		}
	})
	return hup
}

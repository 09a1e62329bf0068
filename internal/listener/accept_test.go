package listener

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// Workers register what they receive with their poller without setting any
// flag: a blocking descriptor would never see a deadline fire, so a slow
// client could hold a connection forever. The peer address comes with the
// connection, for the conns frame.
func TestAccept4(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var aerr error
	var sa unix.RawSockaddrAny
	rc.Control(func(lfd uintptr) {
		// Bounded wait for the connection in the backlog.
		pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
		if _, aerr = unix.Poll(pfd, 5000); aerr == nil {
			fd, aerr = Accept4(int(lfd), &sa)
		}
	})
	if aerr != nil {
		t.Fatal(aerr)
	}
	defer unix.Close(fd)
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Errorf("accepted descriptor is blocking (flags %#x)", fl)
	}
	peer := ipc.PeerOf(&sa)
	if want, have := c.LocalAddr().String(), ipc.PeerAddr(peer[:]).String(); want != have {
		t.Errorf("peer address %s, want %s", have, want)
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fdfl&unix.FD_CLOEXEC == 0 {
		t.Error("accepted descriptor is not close-on-exec")
	}
}

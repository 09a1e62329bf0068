package listener

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// With DeferAccept a connection is accepted once its client has sent
// something: a client that connected first and sent nothing stays in the
// kernel, and the first accept returns the one that spoke, its request
// already waiting. (Without it the silent one, first in the queue, comes
// first.)
func TestDeferAccept(t *testing.T) {
	// The silent connection becomes acceptable anyway after
	// DeferAcceptTimeout; an attempt slower than that on a loaded machine
	// tells nothing and is made again.
	for attempt := 1; ; attempt++ {
		started := time.Now()
		first, talker := deferAcceptOnce(t)
		if first == talker {
			return
		}
		if time.Since(started) < 900*time.Millisecond || attempt == 3 {
			t.Fatalf("first accepted: the client on port %d, which sent nothing; want %d, the one that sent a request", first, talker)
		}
	}
}

// deferAcceptOnce connects a silent client, then one that sends a request,
// to a socket with DeferAccept, and returns the peer port of the first
// connection accepted and the port of the client that sent.
func deferAcceptOnce(t *testing.T) (first, talker int) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Detach(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.DeferAccept(); err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); err != nil || n != 1 {
		t.Fatalf("no connection to accept within 5s: %d, %v", n, err)
	}
	nfd, sa, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(nfd)
	return sa.(*unix.SockaddrInet4).Port, c.LocalAddr().(*net.TCPAddr).Port
}

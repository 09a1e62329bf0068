package cluster

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// handedPair returns a client connection and the server side adopted the
// way the worker adopts a connection handed over by the supervisor.
func handedPair(t *testing.T) (net.Conn, *handedConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// A duplicate, non-blocking as the supervisor hands it over.
	rc, _ := srv.(*net.TCPConn).SyscallConn()
	var fd int
	rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	c, err := adoptConn(fd, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return client, c
}

func TestHandedConnReadWriteAddrs(t *testing.T) {
	client, c := handedPair(t)
	if want, have := client.LocalAddr().String(), c.RemoteAddr().String(); want != have {
		t.Fatalf("RemoteAddr: want %s, have %s", want, have)
	}
	if want, have := client.RemoteAddr().String(), c.LocalAddr().String(); want != have {
		t.Fatalf("LocalAddr: want %s, have %s", want, have)
	}
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
}

func TestHandedConnDeadlineIsNetTimeout(t *testing.T) {
	_, c := handedPair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a net.Error timeout, have %#v", err)
	}
}

func TestHandedConnCloseWriteAndEOF(t *testing.T) {
	client, c := handedPair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client after CloseWrite: want io.EOF, have %v", err)
	}
	client.Close()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the client closed: want io.EOF, have %v", err)
	}
	if err := c.SetNoDelay(true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetKeepAlive(true); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: want net.ErrClosed, have %v", err)
	}
}

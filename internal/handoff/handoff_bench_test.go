package handoff

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// BenchmarkDispatch measures the supervisor's side of one handoff: pick a
// worker, send the descriptor, close the supervisor's copy. The worker side
// receives and closes it in the same loop.
func BenchmarkDispatch(b *testing.B) {
	h, bal := newTestHandoff(16, time.Second)
	t, peer := testTarget(b, 1)
	bal.Add(t)
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	buf := make([]byte, ipc.MaxFrame)
	got := make([]int, 0, ipc.MaxFDs)
	fds := make([]int, 1)
	scratch := new(batch)
	b.ReportAllocs()
	for b.Loop() {
		fd, err := unix.Dup(int(r.Fd()))
		if err != nil {
			b.Fatal(err)
		}
		fds[0] = fd
		h.dispatch(fds, nil, scratch)
		_, got, err = peer.Recv(buf, got[:0])
		if err != nil || len(got) != 1 {
			b.Fatal(err, got)
		}
		unix.Close(got[0])
	}
}

// BenchmarkHandoffTCP measures a connection end to end in process: a client
// connects, the accept loop hands the connection over, and the "worker"
// turns the received descriptor into a net.Conn the way cluster's listener
// does, then closes it.
func BenchmarkHandoffTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	h, bal := newTestHandoff(16, time.Second)
	t, peer := testTarget(b, 1)
	bal.Add(t)
	loop, err := h.Accept(ln.(*net.TCPListener), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer loop.Stop()
	buf := make([]byte, ipc.MaxFrame)
	got := make([]int, 0, ipc.MaxFDs)
	addr := ln.Addr().String()
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		_, got, err = peer.Recv(buf, got[:0])
		if err != nil || len(got) != 1 {
			b.Fatal(err, got)
		}
		f := os.NewFile(uintptr(got[0]), "conn")
		wc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		wc.Close()
		c.Close()
	}
}

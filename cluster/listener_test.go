package cluster

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// rrListener is a listener on one end of a handoff channel, as Listen makes
// it in rr mode, and the supervisor's end.
func rrListener(t *testing.T) (*listener, *ipc.Channel) {
	t.Helper()
	sup, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := ipc.NewChannel(remote)
	if err != nil {
		t.Fatal(err)
	}
	l := newListener(&worker{})
	l.handoff, l.buf = ch, make([]byte, ipc.MaxFrame)
	t.Cleanup(func() { sup.Close(); ch.Close() })
	return l, sup
}

// peer4 is the record accept4 would give for an IPv4 client.
func peer4(ip [4]byte, port uint16) ipc.Peer {
	sa := unix.RawSockaddrAny{}
	in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
	in.Family = unix.AF_INET
	in.Addr = ip
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in.Port))[:], port)
	return ipc.PeerOf(&sa)
}

// acceptedFD returns a client and the server side's descriptor, as the
// supervisor accepts it (non-blocking).
func acceptedFD(t *testing.T) (net.Conn, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, fd := dialAccepted(t, ln)
	t.Cleanup(func() { client.Close() })
	return client, fd
}

// A conns frame's peer records become the connections' remote addresses
// (the worker does not ask the kernel); without them the worker asks.
func TestListenerTakesPeersFromFrame(t *testing.T) {
	l, sup := rrListener(t)
	_, fd1 := acceptedFD(t)
	client2, fd2 := acceptedFD(t)

	// The first record names an address that is not the real peer, so
	// that the test sees where the listener took it from; the second is
	// unknown, so the listener must ask the kernel.
	p1 := peer4([4]byte{192, 0, 2, 7}, 12345)
	var p2 ipc.Peer
	frame := append(append(ipc.AppendConnsPeers(nil, 2), p1[:ipc.PeerSize]...), p2[:ipc.PeerSize]...)
	if err := sup.Send(frame, []int{fd1, fd2}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd1)
	unix.Close(fd2)

	c1, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if want, have := "192.0.2.7:12345", c1.RemoteAddr().String(); want != have {
		t.Fatalf("first connection: RemoteAddr %s, want %s from the frame", have, want)
	}
	c2, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if want, have := client2.LocalAddr().String(), c2.RemoteAddr().String(); want != have {
		t.Fatalf("second connection: RemoteAddr %s, want %s from the kernel", have, want)
	}
}

// With several listeners, each record's last byte is the listener's index
// (ipc.FeatureListeners): the connection is named for it.
func TestListenerTakesListenerFromFrame(t *testing.T) {
	l, sup := rrListener(t)
	l.w.listeners = []ipc.ListenerInfo{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:2"}}
	defer func() { l.w.listeners = nil }()
	_, fd1 := acceptedFD(t)
	_, fd2 := acceptedFD(t)
	p1, p2 := peer4([4]byte{192, 0, 2, 7}, 1), peer4([4]byte{192, 0, 2, 7}, 2)
	p2.SetListener(1)
	frame := append(append(ipc.AppendConnsRecords(nil, 2, ipc.RecordSize), p1[:]...), p2[:]...)
	if err := sup.Send(frame, []int{fd1, fd2}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd1)
	unix.Close(fd2)
	for i, want := range []string{"a", "b"} {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if have := ListenerName(c); have != want {
			t.Errorf("connection %d: listener %q, want %q", i, have, want)
		}
	}
}

// A frame without peer records (an older supervisor, or a connection read
// back from a dead worker) still gives every connection its address.
func TestListenerWithoutPeers(t *testing.T) {
	l, sup := rrListener(t)
	client, fd := acceptedFD(t)
	if err := sup.Send(ipc.ConnsFrame(1), []int{fd}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if want, have := client.LocalAddr().String(), c.RemoteAddr().String(); want != have {
		t.Fatalf("RemoteAddr %s, want %s", have, want)
	}
}

// Connections sent over the control channel (reuseport: a retired slot's
// backlog) take their peer records the same way.
func TestAdoptAllTakesPeers(t *testing.T) {
	_, fd := acceptedFD(t)
	p := peer4([4]byte{192, 0, 2, 9}, 80)
	cs := adoptAll(nil, []int{fd}, p[:ipc.PeerSize], ipc.PeerSize, func(int) net.Addr { return nil })
	if len(cs) != 1 {
		t.Fatalf("want one connection, have %d", len(cs))
	}
	c := cs[0]
	defer c.Close()
	if want, have := "192.0.2.9:80", c.RemoteAddr().String(); want != have {
		t.Fatalf("RemoteAddr %s, want %s from the frame", have, want)
	}
}

// With several listeners (reuseport: a vacant slot's backlog of the
// second one) each record names the connection's listener, and it gets
// that listener's local address.
func TestAdoptAllNamesListener(t *testing.T) {
	_, fd1 := acceptedFD(t)
	_, fd2 := acceptedFD(t)
	var recs []byte
	for _, i := range []int{1, 0} {
		p := peer4([4]byte{192, 0, 2, byte(9 + i)}, 80)
		p.SetListener(i)
		recs = append(recs, p[:ipc.RecordSize]...)
	}
	locals := []net.Addr{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1000}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 2000}}
	cs := adoptAll(nil, []int{fd1, fd2}, recs, ipc.RecordSize, func(i int) net.Addr { return locals[i] })
	if len(cs) != 2 {
		t.Fatalf("want two connections, have %d", len(cs))
	}
	for i, want := range []int{1, 0} {
		defer cs[i].Close()
		if have := cs[i].index; have != want {
			t.Errorf("connection %d: listener %d, want %d", i, have, want)
		}
		if have := cs[i].LocalAddr(); have != locals[want] {
			t.Errorf("connection %d: local address %v, want listener %d's %v", i, have, want, locals[want])
		}
		if want, have := fmt.Sprintf("192.0.2.%d:80", 9+want), cs[i].RemoteAddr().String(); want != have {
			t.Errorf("connection %d: RemoteAddr %s, want %s", i, have, want)
		}
	}
}

// A connection that cannot be adopted (here not a socket at all) must not
// end a drain early: the connections after it in the same frame are still
// served.
func TestDrainSkipsUnusableConnection(t *testing.T) {
	l, sup := rrListener(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	client, fd := acceptedFD(t)
	if err := sup.Send(ipc.ConnsFrame(2), []int{int(r.Fd()), fd}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	l.stopTaking()
	acceptedFrom(t, l, acceptAsync(l), client, "Accept parked with a usable connection still queued")
}

// acceptAsync calls l.Accept once, sending what it returns (nil on error).
func acceptAsync(l *listener) <-chan net.Conn {
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			c = nil
		}
		got <- c
	}()
	return got
}

// acceptedFrom waits for got, from acceptAsync, to yield client's
// connection, and fails with parked if Accept has not returned within 5
// seconds.
func acceptedFrom(t *testing.T, l *listener, got <-chan net.Conn, client net.Conn, parked string) {
	t.Helper()
	select {
	case c := <-got:
		if c == nil {
			t.Fatal("Accept failed instead of returning the connection")
		}
		defer c.Close()
		if want, have := client.LocalAddr().String(), c.RemoteAddr().String(); want != have {
			t.Fatalf("RemoteAddr %s, want %s", have, want)
		}
	case <-time.After(5 * time.Second):
		l.Close() // unblocks the parked Accept
		<-got
		t.Fatal(parked)
	}
}

// An accept that ran out of descriptors must read to http.Server as a
// temporary net.Error, or Serve returns and the worker exits.
func TestAcceptEMFILEIsTemporary(t *testing.T) {
	var err error = tempErr{&net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}}
	ne, ok := err.(net.Error)
	//lint:ignore SA1019 http.Server.Serve still decides on Temporary.
	if !ok || !ne.Temporary() {
		t.Fatalf("%T is not a temporary net.Error: http.Server would stop serving", err)
	}
}

package cluster

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// namedPair is a demux over an rr listener with listeners "a" and "b", and
// the supervisor's end of the handoff channel.
func namedPair(t *testing.T) (*demux, *ipc.Channel) {
	t.Helper()
	l, sup := rrListener(t)
	l.w.listeners = []ipc.ListenerInfo{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:2"}}
	d := newDemux(l)
	l.hold = d.hold
	d.start()
	t.Cleanup(func() { l.Close(); <-d.done })
	return d, sup
}

// sendTo hands one connection per entry of listeners, in one conns frame;
// the peer port of the Nth is N+1, so that a test can tell them apart. It
// returns the clients.
func sendTo(t *testing.T, sup *ipc.Channel, listeners ...int) []net.Conn {
	t.Helper()
	frame := ipc.AppendConnsRecords(nil, len(listeners), ipc.RecordSize)
	var fds []int
	var clients []net.Conn
	for i, index := range listeners {
		client, fd := acceptedFD(t)
		p := peer4([4]byte{192, 0, 2, 1}, uint16(i+1))
		p.SetListener(index)
		frame = append(frame, p[:]...)
		fds, clients = append(fds, fd), append(clients, client)
	}
	if err := sup.Send(frame, fds); err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	return clients
}

// acceptWithin is v.Accept, failing the test if it takes 5 seconds.
func acceptWithin(t *testing.T, v net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	got := make(chan res, 1)
	go func() { c, err := v.Accept(); got <- res{c, err} }()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.c
	case <-time.After(5 * time.Second):
		v.Close()
		t.Fatal("Accept blocked with a connection sent for its listener")
		return nil
	}
}

// Each named listener yields only its own listener's connections, and
// closing one leaves the other serving while the closed one's connections
// are closed.
func TestListenNamedRoutesAndClosesOne(t *testing.T) {
	d, sup := namedPair(t)
	a, err := d.claim(0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.claim(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.claim(1); err == nil {
		t.Fatal("a second claim of listener b succeeded")
	}
	sendTo(t, sup, 0, 1, 0) // ports 1 (a), 2 (b), 3 (a)
	want := map[net.Listener][]string{b: {"192.0.2.1:2"}, a: {"192.0.2.1:1", "192.0.2.1:3"}}
	for _, v := range []net.Listener{b, a} {
		for _, addr := range want[v] {
			c := acceptWithin(t, v)
			defer c.Close()
			if c.RemoteAddr().String() != addr || ListenerName(c) != v.(*namedListener).name {
				t.Errorf("listener %s got %s (named %q), want %s", v.(*namedListener).name, c.RemoteAddr(), ListenerName(c), addr)
			}
		}
	}

	a.Close()
	clients := sendTo(t, sup, 0, 1) // port 1 for the closed a, 2 for b
	c := acceptWithin(t, b)
	defer c.Close()
	if c.RemoteAddr().String() != "192.0.2.1:2" {
		t.Errorf("b got %s after a closed, want 192.0.2.1:2", c.RemoteAddr())
	}
	clients[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the closed listener's connection: read %v, want EOF (closed by the worker)", err)
	}
	select {
	case <-d.base.closed:
		t.Fatal("closing one named listener closed the others' listener")
	default:
	}
	b.Close()
	select {
	case <-d.base.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the last named listener left the underlying one open")
	}
}

// Draining, the underlying listener parks (the worker then tells the
// application) only once every routed connection was taken by its server:
// returned by Accept, and Accept called again.
func TestListenNamedDrainWaitsForServers(t *testing.T) {
	d, sup := namedPair(t)
	a, _ := d.claim(0)
	b, _ := d.claim(1)
	defer a.Close()
	defer b.Close()
	sendTo(t, sup, 1)
	deadline := time.Now().Add(5 * time.Second)
	for d.out.Load() != 1 || len(d.views[1].conns) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the connection for b was not routed: out %d", d.out.Load())
		}
		time.Sleep(time.Millisecond)
	}
	d.base.stopTaking()
	select {
	case <-d.base.parked:
		t.Fatal("parked with a connection queued for b's server")
	default:
	}
	c := acceptWithin(t, b)
	defer c.Close()
	select {
	case <-d.base.parked:
		t.Fatal("parked before b's server called Accept again (it may not track the connection yet)")
	default:
	}
	go b.Accept() // the server tracks c; returns when b closes
	select {
	case <-d.base.parked:
	case <-time.After(5 * time.Second):
		t.Fatal("did not park once b's server took its connection")
	}
}

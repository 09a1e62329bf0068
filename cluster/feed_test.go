package cluster

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	listensock "github.com/prefork/prefork/internal/listener"
)

// acceptorOn is a socket acceptor on a new listening socket of its own, as
// a worker inherits one per listener in shared and reuseport mode.
func acceptorOn(t *testing.T) (*socketAcceptor, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := listensock.Dup(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	a, err := newSocketAcceptor(f)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, ln.Addr().String()
}

// A drain closes every listener's socket; a second listener's feed that
// accepted a connection just before must have it served: Accept may not
// park until every feed has ended. Parking first left the connection in
// extra until the worker exited and reset it (TestReusePortScaleDown's
// "connection reset by peer" during a scale-down, two listeners).
func TestDrainWaitsForFeeds(t *testing.T) {
	inner, _ := acceptorOn(t)
	more, addr := acceptorOn(t)
	more.index = 1
	l := newListener(&worker{})
	l.inner, l.more = inner, []*socketAcceptor{more}
	defer l.Close()

	held, release := make(chan struct{}), make(chan struct{})
	feedAccepted = func() { close(held); <-release }
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer func() { free(); feedAccepted = func() {} }()
	l.startFeeds()
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the second listener's feed accepted nothing")
	}

	// The feed holds the connection; the drain closes the sockets, and
	// Accept must wait rather than park.
	l.stopTaking()
	got := acceptAsync(l)
	parked := false
	for deadline := time.Now().Add(5 * time.Second); ; {
		if len(l.parked) > 0 {
			parked = true
			break
		}
		if blockedIn("cluster.(*listener).lastFed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Accept neither parked nor waited for the feed")
		}
		time.Sleep(time.Millisecond) // polling
	}
	free()
	if parked {
		t.Error("Accept parked while a feed still held a connection")
	}
	acceptedFrom(t, l, got, client, "Accept parked and left the fed connection in extra")
	if c := l.lastFed(); c != nil {
		c.Close()
		t.Fatal("a second connection was fed")
	}
}

// blockedIn reports whether some goroutine's stack is in fn.
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn+"(")
}

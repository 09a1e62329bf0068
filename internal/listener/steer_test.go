package listener

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// group binds n SO_REUSEPORT sockets on 127.0.0.1 and detaches them, so
// that nothing but the test accepts on them.
func group(t *testing.T, n int) []*Socket {
	t.Helper()
	lns, err := ListenReusePort("127.0.0.1:0", n)
	if err != nil {
		t.Fatal(err)
	}
	socks, err := DetachAll(lns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range socks {
			s.Close()
		}
	})
	return socks
}

// spread dials n connections to addr and returns how many each socket
// accepted, polling the sockets (non-blocking) until all n are accounted
// for.
func spread(t *testing.T, addr string, socks []*Socket, n int) []int {
	t.Helper()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	have := make([]int, len(socks))
	total := 0
	deadline := time.Now().Add(5 * time.Second)
	var sa unix.RawSockaddrAny
	for total < n {
		for i, s := range socks {
			for {
				fd, err := Accept4(s.fd, &sa)
				if err != nil {
					break
				}
				unix.Close(fd)
				have[i]++
				total++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("accepted %d of %d connections: %v", total, n, have)
		}
		time.Sleep(time.Millisecond)
	}
	return have
}

// TestSteer: with a program steering to the first two of four sockets,
// every connection lands on those two, and both get some.
func TestSteer(t *testing.T) {
	socks := group(t, 4)
	if err := Steer(socks[3], []int{0, 1}); err != nil { // any member may attach
		t.Fatal(err)
	}
	have := spread(t, socks[0].Addr().String(), socks, 200)
	if have[2] != 0 || have[3] != 0 || have[0] == 0 || have[1] == 0 {
		t.Fatalf("want all 200 on sockets 0 and 1, each some; have %v", have)
	}
}

// TestUnlistenMovesTheLast: shutdown(SHUT_RD) takes a socket out of the
// group even while another descriptor of it is open, and the group's last
// socket takes its index, as Steer's callers assume.
func TestUnlistenMovesTheLast(t *testing.T) {
	socks := group(t, 4)
	dup, err := Dup(socks[1]) // a worker's copy, still open
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	if err := Unlisten(socks[1]); err != nil {
		t.Fatal(err)
	}
	// The group is now [0, 3, 2]: index 1 is the former last socket.
	if err := Steer(socks[0], []int{1}); err != nil {
		t.Fatal(err)
	}
	have := spread(t, socks[0].Addr().String(), socks, 100)
	if have[3] != 100 {
		t.Fatalf("want all 100 on socket 3 (moved to index 1); have %v", have)
	}
	// And a table that is not 0..n-1.
	if err := Steer(socks[0], []int{2, 0}); err != nil {
		t.Fatal(err)
	}
	have = spread(t, socks[0].Addr().String(), socks, 100)
	if have[1] != 0 || have[3] != 0 || have[0] == 0 || have[2] == 0 {
		t.Fatalf("want all 100 on sockets 0 and 2, each some; have %v", have)
	}
}

func TestSteerBadTable(t *testing.T) {
	socks := group(t, 1)
	for _, to := range [][]int{nil, {-1}, {1 << 16}, make([]int, maxSteer+1)} {
		if err := Steer(socks[0], to); !errors.Is(err, ErrSteer) {
			t.Errorf("Steer(%d entries): want ErrSteer, have %v", len(to), err)
		}
	}
}

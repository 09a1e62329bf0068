package supervisor

import (
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
	"github.com/prefork/prefork/internal/settings"
)

// TestReusePortGroupOrder: the mode's copy of the kernel's group order
// follows a retired socket's close (the group's last socket takes its
// place), so that the program steers to the live sockets only when a new
// slot's socket joined after retired ones. Nothing accepts on the live
// sockets here, and no worker takes handoffs: a connection steered to a
// retired socket would be accepted as it is emptied and wait in the handoff
// queue.
func TestReusePortGroupOrder(t *testing.T) {
	cfg := testConfig()
	cfg.Listen, cfg.Workers, cfg.Mode = settings.Listeners{"127.0.0.1:0"}, 2, ipc.ModeReusePort
	m, err := newReusePort(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.stopAccepting()
	m.quiet = 20 * time.Millisecond
	g := m.groups[0]
	for id := 3; id <= 5; id++ {
		if _, err := m.socket(g, id); err != nil {
			t.Fatal(err)
		}
	}
	groupLen := func() int { m.mu.Lock(); defer m.mu.Unlock(); return len(g.order) }

	m.slot(&slot{id: 3}, slotRetired) // kernel group: 1 2 3 4 5 → 1 2 5 4
	waitUntil(t, "slot 3's socket closed", func() bool { return groupLen() == 4 })
	m.slot(&slot{id: 4}, slotRetired) // steered to indices 0 1 2; 4 closes later
	// Under m.mu: slot 4's emptying deletes from g.socks when it closes.
	m.mu.Lock()
	live := []*portSocket{g.socks[1], g.socks[2], g.socks[5]}
	m.mu.Unlock()

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	const n = 200
	for range n {
		c, err := net.DialTimeout("tcp", addrOf(m), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	have := make([]int, len(live))
	waitUntil(t, "every connection queued on a live socket", func() bool {
		total := 0
		for i, ps := range live {
			have[i] += acceptAll(t, ps.ln)
			total += have[i]
		}
		return total == n || m.h.Pending() > 0
	})
	if p := m.h.Pending(); p > 0 {
		t.Fatalf("%d connections reached the retired socket; live sockets got %v", p, have)
	}
	waitUntil(t, "slot 4's socket closed", func() bool { return groupLen() == 3 })
}

// acceptAll accepts and closes what is queued on s, without waiting.
func acceptAll(t *testing.T, s *listener.Socket) int {
	rc, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	rc.Control(func(fd uintptr) {
		var sa unix.RawSockaddrAny
		for {
			nfd, err := listener.Accept4(int(fd), &sa)
			if err != nil {
				return
			}
			unix.Close(nfd)
			n++
		}
	})
	return n
}

// waitUntil polls cond until it holds, failing the test after 5s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

package supervisor

import (
	"strconv"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// -defer-accept reaches every TCP socket the supervisor binds: rr and
// shared's one, reuseport's first ones and a slot's added later; without
// it none has TCP_DEFER_ACCEPT.
func TestDeferAcceptSockets(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg := testConfig()
		cfg.DeferAccept = on
		sock, _, err := bindOne(cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		checkDeferAccept(t, "rr and shared", sock, on)
		sock.Close()

		cfg.Mode = ipc.ModeReusePort
		m, err := newReusePort(cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		added, err := m.socket(3)
		if err != nil {
			m.stopAccepting()
			t.Fatal(err)
		}
		m.mu.Lock()
		for id, ps := range m.socks {
			checkDeferAccept(t, "reuseport slot "+strconv.Itoa(id), ps.ln, on)
		}
		m.mu.Unlock()
		checkDeferAccept(t, "reuseport added slot", added.ln, on)
		m.stopAccepting()
	}
}

func checkDeferAccept(t *testing.T, what string, s *listener.Socket, want bool) {
	t.Helper()
	rc, _ := s.SyscallConn()
	var v int
	var err error
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if (v > 0) != want {
		t.Errorf("%s: TCP_DEFER_ACCEPT %d with -defer-accept %v", what, v, want)
	}
}

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
// shared's one per listener, every socket of each of reuseport's groups
// and a slot's added later; without it none has TCP_DEFER_ACCEPT.
func TestDeferAcceptSockets(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg := testConfig()
		cfg.DeferAccept = on
		cfg.Listen = append(cfg.Listen, "other=127.0.0.1:0")
		lns, err := bindListeners(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lns {
			checkDeferAccept(t, "rr and shared "+l.name, l.sock, on)
		}
		closeListeners(lns, true)

		cfg.Mode = ipc.ModeReusePort // a group for each listener
		m, err := newReusePort(cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		var added []*portSocket
		for _, g := range m.groups {
			ps, err := m.socket(g, 3)
			if err != nil {
				m.stopAccepting()
				t.Fatal(err)
			}
			added = append(added, ps)
		}
		m.mu.Lock()
		m.each(func(ps *portSocket) {
			checkDeferAccept(t, "reuseport "+m.lns[ps.g.index].name+" slot "+strconv.Itoa(ps.id), ps.ln, on)
		})
		m.mu.Unlock()
		for _, ps := range added {
			checkDeferAccept(t, "reuseport added slot of "+m.lns[ps.g.index].name, ps.ln, on)
		}
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

package supervisor

import (
	"os"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// shared is -mode shared (Node's SCHED_NONE): every worker accepts on a
// duplicate of the one listening socket and the kernel decides who gets a
// connection. The supervisor never touches a connection; what a dead
// worker did not accept stays in the socket's backlog for the others.
type shared struct {
	ln         *listener.Socket
	activated_ bool
}

func (m *shared) addr() string          { return m.ln.Addr().String() }
func (m *shared) activated() bool       { return m.activated_ }
func (m *shared) startAccepting() error { return nil }
func (m *shared) stopAccepting()        { m.ln.Close() }

func (m *shared) prepare(*slot, *ipc.Channel, *os.File) (handles, error) {
	f, err := listener.Dup(m.ln)
	return handles{file: f}, err
}

func (m *shared) route(*process)      {}
func (m *shared) unroute(*process)    {}
func (m *shared) exited(*process) int { return 0 }
func (m *shared) vacant(*slot)        {}
func (m *shared) retire(*slot)        {}
func (m *shared) close() int          { return 0 }
func (m *shared) handoff() *handoff   { return nil }
func (m *shared) observe(observer)    {}
func (m *shared) loadReports() bool   { return false }

func (m *shared) pause(*process, bool) {}
func (m *shared) tick()                {}

// restoreShared takes the listening socket an upgrade kept (see
// upgrade.go).
func restoreShared(st *upgradeState) (*shared, error) {
	socks, err := inheritSockets([]int{st.Listener})
	if err != nil {
		return nil, err
	}
	return &shared{ln: socks[0], activated_: st.Activated}, nil
}

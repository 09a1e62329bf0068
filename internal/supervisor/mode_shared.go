package supervisor

import (
	"context"
	"os"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// shared is -mode shared (Node's SCHED_NONE): every worker accepts on a
// duplicate of the one listening socket and the kernel decides who gets a
// connection. The supervisor never touches a connection; what a dead
// worker did not accept stays in the socket's backlog for the others.
type shared struct {
	ln        *listener.Socket
	activated bool
}

func (m *shared) listeners() []listening {
	return []listening{{name: mainListener, addr: m.ln.Addr().String(), activated: m.activated}}
}

func (m *shared) prepare(*slot, *ipc.Channel, *os.File) (handles, error) {
	f, err := listener.Dup(m.ln)
	return handles{file: f}, err
}

func (m *shared) startAccepting() error     { return nil }
func (m *shared) stopAccepting()            { m.ln.Close() }
func (m *shared) slot(*slot, slotChange)    {}
func (m *shared) settle(context.Context)    {}
func (m *shared) handoff() *handoff.Handoff { return nil }
func (m *shared) save(st *upgradeState) (func(), error) {
	return func() {}, keepListener(st, m.ln, m.activated)
}

// restoreShared takes the listening socket an upgrade kept.
func restoreShared(st *upgradeState, kept *keptFDs) (*shared, error) {
	sock, _, err := kept.socket(roleListener, mainListener)
	if err != nil {
		return nil, err
	}
	return &shared{ln: sock, activated: st.Activated}, nil
}

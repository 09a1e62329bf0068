package supervisor

import (
	"context"
	"os"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

// shared is -mode shared (Node's SCHED_NONE): every worker accepts on a
// duplicate of the one listening socket and the kernel decides who gets a
// connection. The supervisor never touches a connection; what a dead
// worker did not accept stays in the socket's backlog for the others.
type shared struct {
	lns []listening
}

func (m *shared) listeners() []listening { return m.lns }

// prepare gives the worker every listener's socket, in order.
func (m *shared) prepare(*slot, *ipc.Channel, *os.File) (handles, error) {
	files, err := dupAll(m.lns)
	return handles{files: files}, err
}

func (m *shared) startAccepting() error     { return nil }
func (m *shared) stopAccepting()            { closeListeners(m.lns, true) }
func (m *shared) slot(*slot, slotChange)    {}
func (m *shared) settle(context.Context)    {}
func (m *shared) handoff() *handoff.Handoff { return nil }
func (m *shared) save(st *upgradeState) (func(), error) {
	return func() {}, keepListeners(st, m.lns)
}

// restoreShared takes the listening sockets an upgrade kept.
func restoreShared(cfg Config, st *upgradeState, kept *keptFDs) (*shared, error) {
	lns, err := restoreListeners(cfg, st, kept)
	if err != nil {
		return nil, err
	}
	return &shared{lns: lns}, nil
}

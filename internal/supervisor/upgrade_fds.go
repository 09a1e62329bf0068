package supervisor

import (
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/listener"
)

// Descriptors an upgrade keeps, by role. A listener's record also has the
// name it is known by: the listener's name for a mode's sockets, the
// configured address for metrics and admin, the path for the control
// socket.
const (
	roleListener = "listener"
	rolePort     = "reuseport"
	roleControl  = "control-channel"
	roleHandoff  = "handoff"
	roleKeep     = "handoff-duplicate"
	rolePending  = "pending"
	roleCtlSock  = "control-socket"
	roleMetrics  = "metrics-listener"
	roleAdmin    = "admin-listener"
	roleBinary   = "previous-binary"
	roleReply    = "ctl-connection"
)

// fdRole is one kept descriptor in the state.
type fdRole struct {
	FD   int    `json:"fd"`
	Role string `json:"role"`
	Slot int    `json:"slot,omitempty"`
	// Name is a listener's (see the roles); states written before it was
	// recorded have none, and match any name.
	Name string `json:"name,omitempty"`
}

// keep records fd under role (for slot, if not 0) and returns it.
func (st *upgradeState) keep(fd int, role string, slot int) int {
	st.FDs = append(st.FDs, fdRole{FD: fd, Role: role, Slot: slot})
	return fd
}

// keepListener records ln, a listening socket known as name, under role
// (for slot, if not 0) and returns its descriptor.
func (st *upgradeState) keepListener(ln syscall.Conn, role, name string, slot int) (int, error) {
	fd, err := fdOf(ln)
	if err != nil {
		return -1, fmt.Errorf("%s %s: %w", role, name, err)
	}
	st.FDs = append(st.FDs, fdRole{FD: fd, Role: role, Slot: slot, Name: name})
	return fd, nil
}

// keptFDs is the one registry of the listening sockets an upgrade kept,
// as tableflip's Fds: each part of the restoring image takes its own by
// role and name (the modes their sockets, the services theirs) and binds
// anew what it does not find. What no part takes is closed (close).
type keptFDs struct {
	fds []fdRole // not taken yet
}

// listenerRoles are the roles keptFDs serves; the others (workers'
// channels, pending connections, the binary, the reply) are restored from
// the state's own fields.
var listenerRoles = map[string]bool{roleListener: true, rolePort: true, roleCtlSock: true, roleMetrics: true, roleAdmin: true}

// keptOf is the registry of st's listening sockets; nil st has none.
func keptOf(st *upgradeState) *keptFDs {
	k := &keptFDs{}
	if st != nil {
		for _, f := range st.FDs {
			if listenerRoles[f.Role] {
				k.fds = append(k.fds, f)
			}
		}
	}
	return k
}

// take removes and returns the first descriptor kept under role and name
// (any name for a record without one), in the order they were kept.
func (k *keptFDs) take(role, name string) (fdRole, bool) {
	if k == nil {
		return fdRole{}, false
	}
	for i, f := range k.fds {
		if f.Role == role && (f.Name == "" || f.Name == name) {
			k.fds = append(k.fds[:i], k.fds[i+1:]...)
			return f, true
		}
	}
	return fdRole{}, false
}

// listener takes the listener kept under role and name: nil if there is
// none.
func (k *keptFDs) listener(role, name string) (net.Listener, error) {
	f, ok := k.take(role, name)
	if !ok {
		return nil, nil
	}
	file := file(f.FD, role+"-"+strconv.Itoa(f.FD))
	defer file.Close()
	ln, err := net.FileListener(file) // a duplicate: file is closed
	if err != nil {
		return nil, fmt.Errorf("upgrade: kept %s %d: %w", role, f.FD, err)
	}
	return ln, nil
}

// socket takes the listening TCP or Unix socket kept under role and name, with
// the slot it was kept for, as a bare descriptor outside the runtime
// poller (listener.Socket).
func (k *keptFDs) socket(role, name string) (*listener.Socket, int, error) {
	f, ok := k.take(role, name)
	if !ok {
		return nil, 0, fmt.Errorf("upgrade: no %s %q kept", role, name)
	}
	sock, err := keptSocket(f)
	return sock, f.Slot, err
}

// keptSocket is f's listening socket as a listener.Socket; f's descriptor
// is closed.
func keptSocket(f fdRole) (*listener.Socket, error) {
	file := file(f.FD, f.Role+"-"+strconv.Itoa(f.FD))
	nl, err := net.FileListener(file) // a duplicate: file is closed
	file.Close()
	if err != nil {
		return nil, fmt.Errorf("upgrade: kept %s %d: %w", f.Role, f.FD, err)
	}
	ln, ok := nl.(listener.Listener)
	if !ok {
		nl.Close()
		return nil, fmt.Errorf("upgrade: kept %s %d is not a stream listener", f.Role, f.FD)
	}
	return listener.Detach(ln)
}

// has reports whether a descriptor is kept under role.
func (k *keptFDs) has(role string) bool {
	for _, f := range k.fds {
		if f.Role == role {
			return true
		}
	}
	return false
}

// close closes what no part took.
func (k *keptFDs) close() {
	for _, f := range k.fds {
		unix.Close(f.FD)
	}
	k.fds = nil
}

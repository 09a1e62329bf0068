package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/sticky"
)

// stateFormat is the version of upgradeState's encoding. A binary takes
// over only from a supervisor that writes the format it reads (checked by
// -check-upgrade before the old image execs it). Within a format, fields
// are only added, optional (an older binary ignores them, and a newer one
// reading an older state finds them zero), and the fields an older binary
// reads are still written: so an upgrade goes both ways between releases
// of one format, and a rollback re-executes the previous binary with the
// state it wrote. A change an older binary cannot read takes a new format.
//
// Format 1 is what the previous release (b74e5cd) writes; fdRole.Name,
// Listeners and Mode were added since, optional. A reuseport state lists
// every group's sockets in Ports, listener by listener: b74e5cd restores
// the one group of one listener; an upgrade to it with several listeners
// is refused (see checkedListeners).
const stateFormat = 1

// envState names the memfd that holds the state, in the new image's
// environment. Workers never see it: workerEnv drops PREFORK_*.
const envState = "PREFORK_UPGRADE_STATE"

// upgradeState is what a supervisor hands to the image that replaces it:
// everything the Go runtime loses across execve. Descriptors are numbers
// in the process, kept open (close-on-exec cleared) across the execve;
// FDs lists every one of them with its role, and nothing else is kept.
type upgradeState struct {
	Format   int    `json:"format"`
	From     string `json:"from"`     // Version of the image that wrote it
	Previous string `json:"previous"` // its binary's path, for messages
	// Binary is a descriptor of the previous binary: a failed restore
	// rolls back by executing it, even if its path now holds the new one.
	Binary   int      `json:"binary"`
	Args     []string `json:"args"`     // its command line, flags and worker command
	Env      []string `json:"env"`      // its environment, with the systemd variables it took
	Upgrades int      `json:"upgrades"` // completed upgrades before this one
	// Failure is why the new image could not restore the state: set when
	// it rolls back to Previous, which then answers the upgrade with it.
	Failure string `json:"failure,omitempty"`
	// Signals arrived before the execve and were not handled yet: the
	// image that restores the state handles them.
	Signals []int `json:"signals,omitempty"`

	StoppedAt time.Time   `json:"stopped_at"` // when the old image stopped accepting
	Begun     time.Time   `json:"begun"`
	Gen       int         `json:"generation"`
	Counts    countsState `json:"counts"`
	Slots     []slotState `json:"slots"`

	// Mode is the -mode of the image that wrote it; older images wrote
	// none. A reuseport state need not have Ports: its listeners may all
	// be Unix sockets, served as shared.
	Mode string `json:"mode,omitempty"`

	Listener  int  `json:"listener"` // rr and shared: the first listener's socket; -1 none
	Activated bool `json:"activated"`
	// Listeners are the listeners in the workers' order, each kept under
	// roleListener by its name; an older image's state has none (its one
	// listener is mainListener).
	Listeners []listenerState `json:"listeners,omitempty"`
	Ports     []int           `json:"ports"` // reuseport: each slot's socket of each group, listener by listener, in the group's order
	PortSlots []int           `json:"port_slots"`
	Pending   []pendingState  `json:"pending"`          // rr: connections queued for a ready worker
	Claims    []sticky.Claim  `json:"claims,omitempty"` // rr -sticky: the keys workers claimed, least recently used first
	Control   int             `json:"control"`          // the control socket's listener; -1 none
	Metrics   int             `json:"metrics"`          // the metrics listener; -1 none
	Admin     int             `json:"admin"`            // the admin listener (-admin); -1 none
	Reply     int             `json:"reply"`            // the connection of the `ctl upgrade` that asked; -1 none

	FDs []fdRole `json:"fds"`

	missing []fdRole // listed but not open in this image (takeState)
	lost    []string // what repair took out of the state, for messages
	// portsLost counts the reuseport sockets repair took out.
	portsLost int
}

type countsState struct {
	Spawns   map[control.Cause]uint64 `json:"spawns"`
	Exits    map[control.Cause]uint64 `json:"exits"`
	Reloads  map[string]uint64        `json:"reloads"`
	Protocol uint64                   `json:"protocol"`
	Freezes  uint64                   `json:"freezes"`
}

type slotState struct {
	ID         int         `json:"id"`
	Restarts   int         `json:"restarts"`
	HandedPast uint64      `json:"handed_past"`
	Crashes    []time.Time `json:"crashes"`
	Young      int         `json:"young"`
	Worker     workerState `json:"worker"`
}

type workerState struct {
	PID         int       `json:"pid"`
	Gen         int       `json:"generation"`
	Started     time.Time `json:"started"`
	ReadyAt     time.Time `json:"ready_at"`
	Uses        uint64    `json:"uses"`
	MaxRequests int       `json:"max_requests"`
	Ctl         int       `json:"ctl"`                // the supervisor's end of its control channel
	Handoff     int       `json:"handoff"`            // rr: the supervisor's end of its handoff channel; -1
	Keep        int       `json:"keep"`               // the duplicate of the worker's receiving end; -1
	Handed      uint64    `json:"handed"`             // sent, less returned: the worker's share
	Returned    uint64    `json:"returned,omitempty"` // sent and given back (read back, refused)
	Closed      uint32    `json:"closed"`             // of those, closed by the worker, from its load reports
	Peers       bool      `json:"peers"`
	// Lost says why the worker cannot be kept (a channel missing in the
	// new image): it is killed and replaced.
	Lost string `json:"lost,omitempty"`
	// Paused: the worker asked for no connections (near its descriptor
	// limit) and has not resumed; it does not say so again.
	Paused bool `json:"paused,omitempty"`
}

type pendingState struct {
	FD   int    `json:"fd"`
	Peer []byte `json:"peer,omitempty"`
}

// fdOf is the descriptor behind c, read without os.File.Fd, which would
// put it in blocking mode.
func fdOf(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// setCloexec sets or clears close-on-exec on every descriptor of st.
func (st *upgradeState) setCloexec(on bool) error {
	for _, f := range st.FDs {
		if err := setCloexec(f.FD, on); err != nil {
			return fmt.Errorf("upgrade: %s descriptor %d: %w", f.Role, f.FD, err)
		}
	}
	return nil
}

func setCloexec(fd int, on bool) error {
	flag := 0
	if on {
		flag = unix.FD_CLOEXEC
	}
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag)
	return err
}

// writeState writes st to a new memfd, left close-on-exec: the caller
// clears that just before execve. The memfd is anonymous memory, gone
// with its last descriptor, so nothing is left on disk whatever happens.
func writeState(st *upgradeState) (*os.File, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("upgrade: encode state: %w", err)
	}
	f, err := newMemfd("prefork-upgrade-state")
	if err != nil {
		return nil, fmt.Errorf("upgrade: memfd: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("upgrade: write state: %w", err)
	}
	return f, nil
}

// newMemfd makes an empty memfd, close-on-exec: anonymous memory, gone
// with its last descriptor. The upgrade keeps its state in one, a canary
// reload the release that was serving (release.go). It may be executed
// (MFD_EXEC, where the kernel has the vm.memfd_noexec sysctl).
func newMemfd(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) { // a kernel before 6.3 knows no MFD_EXEC
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// fdPath names descriptor fd of this process for execve, even when the
// file it was opened from has been replaced or removed since: the kernel
// opens the path before it closes the close-on-exec descriptors, so the
// descriptor need not be inherited. (For a #! script it must be: the
// interpreter opens the path again.)
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// errNoState: this process was not started by an upgrade.
var errNoState = errors.New("upgrade: no state")

// takeState reads the state an upgrade left, from the memfd named by
// envState, and closes the memfd and unsets the variable. Every descriptor
// it lists is made close-on-exec again at once, so that no worker started
// later inherits it. It returns errNoState if there is none.
func takeState() (*upgradeState, error) {
	v, ok := os.LookupEnv(envState)
	if !ok {
		return nil, errNoState
	}
	os.Unsetenv(envState)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("upgrade: %s=%q is not a descriptor", envState, v)
	}
	f := os.NewFile(uintptr(fd), "prefork-upgrade-state")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("upgrade: read state: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("upgrade: read state: %w", err)
	}
	st := upgradeState{Admin: -1} // absent from an older state: none, not fd 0
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("upgrade: decode state: %w", err)
	}
	if st.Format != stateFormat {
		return &st, fmt.Errorf("upgrade: state format %d, this binary reads %d", st.Format, stateFormat)
	}
	// Not failed at the first one missing: restore rebuilds without them
	// (upgrade_repair.go).
	st.missing = st.closeOnExec()
	return &st, nil
}

// file wraps inherited descriptor fd, for the constructors that take an
// *os.File and close it (they work on their own duplicate).
func file(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }

// listenerState is one listener an upgrade keeps: its name, and the
// socket file it made (a Unix listener), which the new image removes on a
// clean stop and never binds again.
type listenerState struct {
	Name string `json:"name"`
	Path string `json:"path,omitempty"`
}

package listener

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// ErrNotActivated says the process was not socket-activated.
var ErrNotActivated = errors.New("listener: no LISTEN_FDS for this process")

// Activated returns every socket systemd socket activation passed (TCP or
// Unix), detached, with its spec: named by its LISTEN_FDNAMES entry, or
// fd:N when it has none (or systemd's "unknown"). It unsets LISTEN_PID,
// LISTEN_FDS and LISTEN_FDNAMES so that workers do not see them; the
// descriptors are made close-on-exec.
func Activated() ([]Spec, []*Socket, error) {
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if fds == "" {
		return nil, nil, ErrNotActivated
	}
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil, ErrNotActivated
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 || n > 1024 {
		return nil, nil, fmt.Errorf("listener: LISTEN_FDS=%q is not a count", fds)
	}
	specs := make([]Spec, 0, n)
	for i := range n {
		s := Spec{Network: FD, FD: listenFDsStart + i}
		s.Name = s.Address()
		if i < len(names) && ValidName(names[i]) && names[i] != "unknown" && !slices.ContainsFunc(specs, func(o Spec) bool { return o.Name == names[i] }) {
			s.Name = names[i]
		}
		specs = append(specs, s)
	}
	socks, err := BindAll(specs, FileOptions{UID: -1, GID: -1})
	if err != nil {
		// The descriptors after the failed one stay open, close-on-exec:
		// the supervisor exits on this error.
		return nil, nil, err
	}
	return specs, socks, nil
}

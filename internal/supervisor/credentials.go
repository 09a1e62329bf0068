package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// credentials resolves -user and -group into the credential workers run
// with; nil when they run as the supervisor does. Only root can start
// processes as another user.
func credentials(name, group string) (*syscall.Credential, error) {
	if name == "" {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("-user needs the supervisor to run as root")
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("-user %s: %w", name, err)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return nil, fmt.Errorf("-group %s: %w", group, err)
			}
		}
		gid, _ = strconv.ParseUint(g.Gid, 10, 32)
	}
	// Groups empty: drop the supervisor's supplementary groups (root's).
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

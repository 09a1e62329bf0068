//go:build !linux

package control

import (
	"errors"
	"net"
)

// peerCred is implemented with SO_PEERCRED on Linux only; elsewhere every
// connection is refused rather than served unchecked.
func peerCred(*net.UnixConn) (pid, uid int, err error) {
	return 0, 0, errors.New("control: peer credentials are only checked on Linux")
}

// hungUp treats every EOF as a hang-up outside Linux.
func hungUp(*net.UnixConn) bool { return true }

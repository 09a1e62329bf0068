package control

import (
	"net"
	"os"
	"path/filepath"
	"strings"
)

// DefaultPath is the control socket of a supervisor listening on
// listenAddr when none is given with -control: prefork-PORT.sock, or
// prefork-HOST-PORT.sock when the host is not empty, 0.0.0.0 or ::, in
// $XDG_RUNTIME_DIR if it is set and /tmp otherwise. The supervisor and ctl
// derive the same path only if they agree on XDG_RUNTIME_DIR; sudo and
// systemd services usually do not set it.
//
//	DefaultPath(":3000")          // /tmp/prefork-3000.sock
//	DefaultPath("127.0.0.1:3000") // /tmp/prefork-127.0.0.1-3000.sock
func DefaultPath(listenAddr string) string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = "/tmp" // not os.TempDir: TMPDIR differs between shells, sudo and services
	}
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		host, port = "", listenAddr
	}
	name := "prefork-" + fileSafe(port) + ".sock"
	switch host {
	case "", "0.0.0.0", "::":
	default:
		name = "prefork-" + fileSafe(host) + "-" + fileSafe(port) + ".sock"
	}
	return filepath.Join(dir, name)
}

// fileSafe replaces what does not belong in a file name ("/", "%" of a
// zone, spaces) with "_"; IPv6 colons are kept.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == ':':
			return r
		}
		return '_'
	}, s)
}

package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsafeDir is returned by Listen, Call and Events when DefaultDir
// exists but is not private: not a directory of ours with mode 0700, or a
// symlink. Another user who made it first could otherwise bind the socket
// before the supervisor, or answer ctl in its place.
var ErrUnsafeDir = errors.New("control: socket directory is not private")

// tmpDir is where DefaultDir goes without XDG_RUNTIME_DIR; tests move it.
var tmpDir = "/tmp" // not os.TempDir: TMPDIR differs between shells, sudo and services

// DefaultDir is the directory of the control sockets of the user running
// the process: $XDG_RUNTIME_DIR/prefork if XDG_RUNTIME_DIR is set, else
// /tmp/prefork-EUID. Listen creates it, mode 0700; Listen, Call and Events
// use a socket in it only if it is a directory of that user, mode 0700, and
// not a symlink.
func DefaultDir() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "prefork")
	}
	return filepath.Join(tmpDir, "prefork-"+strconv.Itoa(os.Geteuid()))
}

// DefaultPath is the control socket of a supervisor listening on
// listenAddr when none is given with -control: PORT.sock, or
// HOST-PORT.sock when the host is not empty, 0.0.0.0 or ::, in DefaultDir.
// The supervisor and ctl derive the same path only if they run as the same
// user and agree on XDG_RUNTIME_DIR; sudo and systemd services usually do
// not set it.
//
//	DefaultPath(":3000")          // /tmp/prefork-1000/3000.sock
//	DefaultPath("127.0.0.1:3000") // /tmp/prefork-1000/127.0.0.1-3000.sock
func DefaultPath(listenAddr string) string {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		host, port = "", listenAddr
	}
	name := fileSafe(port) + ".sock"
	switch host {
	case "", "0.0.0.0", "::":
	default:
		name = fileSafe(host) + "-" + fileSafe(port) + ".sock"
	}
	return filepath.Join(DefaultDir(), name)
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

// inDefaultDir reports whether path is a socket in DefaultDir.
func inDefaultDir(path string) bool {
	return filepath.Dir(filepath.Clean(path)) == DefaultDir()
}

// makePrivateDir creates dir with mode 0700 unless it exists, then checks
// it as checkPrivateDir does. Only its last component is created: the
// parent (/tmp, $XDG_RUNTIME_DIR) must exist.
func makePrivateDir(dir string) error {
	err := unix.Mkdir(dir, 0o700)
	created := err == nil
	if err != nil && err != unix.EEXIST {
		return fmt.Errorf("control: create socket directory %s: %w", dir, err)
	}
	return checkPrivateDir(dir, created)
}

// checkPrivateDir returns an error wrapping ErrUnsafeDir unless dir is a
// directory, not a symlink, owned by the effective uid, with mode 0700.
// fix sets the mode first, for a directory just made: mkdir(2) applies the
// umask. The checks are made on the open directory, so that what is checked
// is what was opened.
func checkPrivateDir(dir string, fix bool) error {
	// O_NOFOLLOW: a symlink in the last component fails (ENOTDIR with
	// O_DIRECTORY on Linux, ELOOP elsewhere) rather than being followed to
	// a directory someone else chose.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ELOOP || err == unix.ENOTDIR:
		what := "is not a directory"
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			what = "is a symlink" // only to say so: the open already refused it
		}
		return fmt.Errorf("%w: %s %s", ErrUnsafeDir, dir, what)
	case err != nil:
		return fmt.Errorf("control: socket directory %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(fd)
	if fix {
		if err := unix.Fchmod(fd, 0o700); err != nil {
			return fmt.Errorf("control: socket directory %s: chmod: %w", dir, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("control: socket directory %s: stat: %w", dir, err)
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("%w: %s belongs to uid %d, not to uid %d; remove it or use -control", ErrUnsafeDir, dir, st.Uid, uid)
	}
	if mode := st.Mode & 0o7777; mode != 0o700 {
		return fmt.Errorf("%w: %s has mode %#o, want 0700; chmod it or remove it", ErrUnsafeDir, dir, mode)
	}
	return nil
}

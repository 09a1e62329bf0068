package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The socket file: made private before anyone can connect, a stale one
// replaced, a live one or anything that is not a socket left alone, and
// only the file this server made removed on Close.

// maxPathLen is the longest socket path bind(2) takes: sun_path less its NUL.
const maxPathLen = 107

var (
	// ErrInUse is returned by Listen when a server answers on the path.
	ErrInUse = errors.New("control: a live supervisor already answers on this socket")
	// ErrNotSocket is returned by Listen when the path is taken by something
	// other than a socket, which it never removes.
	ErrNotSocket = errors.New("control: path exists and is not a socket")
)

// Listen creates the control socket at path, mode 0600. A path in
// DefaultDir has that directory made private first (see DefaultDir), or
// fails with ErrUnsafeDir. It fails with
// ErrInUse if a server answers there, and with ErrNotSocket if path is
// anything but a socket; a socket nobody answers on, left by a supervisor
// that died, is removed and replaced. log is used as given (name it, as in
// log.Named("control")); nil logs nothing.
func Listen(path string, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("control: socket path %s is %d bytes long, more than the %d a unix socket takes", path, len(path), maxPathLen)
	}
	if inDefaultDir(path) {
		if err := makePrivateDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	if err := removeStale(path, log); err != nil {
		return nil, err
	}
	ln, fi, err := bindPrivate(path)
	if err != nil {
		return nil, err
	}
	return newServer(path, fi, log, ln), nil
}

// removeStale removes a socket at path that nobody answers on.
func removeStale(path string, log *zap.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: listen: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: %s", ErrNotSocket, path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	// For a unix socket ECONNREFUSED means nothing is bound to the file any
	// more. Anything else (EACCES, EAGAIN from a full backlog of a live
	// server) leaves the file alone.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: listen %s: cannot tell whether a supervisor answers there: %w", path, err)
	}
	if again, err := os.Lstat(path); err != nil || !os.SameFile(fi, again) {
		return nil // replaced meanwhile; bindPrivate's link will not clobber it
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: remove stale socket: %w", err)
	}
	log.Info("removed stale control socket", zap.String("path", path))
	return nil
}

// bindPrivate binds the socket under a temporary name in a new 0700
// directory next to path, makes it 0600 and only then links it at path.
// bind(2) creates the file with mode 0777 &^ umask, and setting the umask
// would change it for every goroutine of the process creating files at the
// time; inside the private directory no other user can reach the socket
// before its mode is final. link(2), unlike rename(2), fails if path exists,
// so a file that appeared meanwhile is never replaced.
func bindPrivate(path string) (*net.UnixListener, os.FileInfo, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".ctl")
	if err != nil {
		return nil, nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes path, not tmp
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		return nil, nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Link(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, fi, nil
}

// removeSocket removes the socket file if it is still the one Listen made.
func (s *Server) removeSocket() error {
	fi, err := os.Lstat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: remove socket: %w", err)
	}
	if !os.SameFile(fi, s.file) {
		s.log.Warn("socket path replaced by another server; leaving it", zap.String("path", s.path))
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: remove socket: %w", err)
	}
	return nil
}

package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FileOptions are what a Unix listener's socket file gets after the bind:
// its permission bits and owner, for a front server (nginx) running as
// another user. Zero Mode keeps what the umask gave; UID and GID -1 keep
// the supervisor's.
type FileOptions struct {
	Mode     os.FileMode
	UID, GID int
}

// BindError is a listener that could not be bound, named for the operator:
// `listener "api" (unix:/run/app.sock): ...`.
type BindError struct {
	Spec Spec
	Err  error
}

func (e *BindError) Error() string {
	if e.Spec.Name == e.Spec.Address() {
		return fmt.Sprintf("listener %s: %v", e.Spec.Address(), e.Err)
	}
	return fmt.Sprintf("listener %q (%s): %v", e.Spec.Name, e.Spec.Address(), e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

// Bind binds the listener s describes, or takes its inherited descriptor
// (fd:N), as a Socket outside the runtime poller.
func Bind(s Spec, fo FileOptions) (*Socket, error) {
	sock, err := bind(s, fo)
	if err != nil {
		return nil, &BindError{Spec: s, Err: err}
	}
	return sock, nil
}

// BindAll binds every listener in order; on error it closes (and unlinks)
// what it bound before, so nothing is left bound.
func BindAll(specs []Spec, fo FileOptions) ([]*Socket, error) {
	socks := make([]*Socket, 0, len(specs))
	for _, s := range specs {
		sock, err := Bind(s, fo)
		if err != nil {
			for _, b := range socks {
				b.Close()
				b.Remove()
			}
			return nil, err
		}
		socks = append(socks, sock)
	}
	return socks, nil
}

func bind(s Spec, fo FileOptions) (*Socket, error) {
	switch s.Network {
	case Unix:
		return bindUnix(s.Addr, fo)
	case FD:
		return inheritFD(s.FD)
	}
	ln, err := Listen(s.Addr)
	if err != nil {
		return nil, errors.Unwrap(err) // drop "listener: ", BindError names it
	}
	return Detach(ln)
}

// bindUnix binds a Unix socket at path. A socket file already there is
// replaced only when nothing answers on it (a stale file of a server that
// died); a live server's is never touched, nor is a file that is not a
// socket.
func bindUnix(path string, fo FileOptions) (*Socket, error) {
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := chmodChown(path, fo); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	sock, err := Detach(ln)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	sock.Own(path)
	return sock, nil
}

// clearStale removes a stale socket file at path, or says why path cannot
// be bound.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket; not replacing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another server is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether another server listens on it: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the stale socket file: %w", err)
	}
	return nil
}

func chmodChown(path string, fo FileOptions) error {
	if fo.Mode != 0 {
		if err := os.Chmod(path, fo.Mode); err != nil {
			return err
		}
	}
	if fo.UID != -1 || fo.GID != -1 {
		if err := os.Lchown(path, fo.UID, fo.GID); err != nil {
			return err
		}
	}
	return nil
}

// inheritFD takes descriptor fd, which must be a listening TCP or Unix
// stream socket this process inherited (as gunicorn's fd://N).
func inheritFD(fd int) (*Socket, error) {
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
		if errors.Is(err, unix.EBADF) {
			return nil, fmt.Errorf("descriptor %d is not open", fd)
		}
		return nil, fmt.Errorf("descriptor %d is not a listening socket", fd)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), fmt.Sprintf("fd:%d", fd))
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	l, ok := ln.(Listener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("descriptor %d is not a TCP or Unix stream socket", fd)
	}
	return Detach(l)
}

// Own makes s the owner of the socket file at path, as it is now: Remove
// removes that file, and only while it is still the same one (device,
// inode and change time: a file made in its place may reuse the inode).
func (s *Socket) Own(path string) {
	var st unix.Stat_t
	if unix.Lstat(path, &st) == nil {
		s.path, s.dev, s.ino, s.ctime = path, st.Dev, st.Ino, st.Ctim
	}
}

// Path is the socket file s owns, "" if none.
func (s *Socket) Path() string { return s.path }

// Remove removes the socket file s owns (Own), unless another file took
// its place since: a server started after us owns that one. Removing
// twice is harmless.
func (s *Socket) Remove() {
	if s == nil || s.path == "" {
		return
	}
	var st unix.Stat_t
	if unix.Lstat(s.path, &st) == nil && st.Dev == s.dev && st.Ino == s.ino && st.Ctim == s.ctime {
		os.Remove(s.path)
	}
	s.path = ""
}

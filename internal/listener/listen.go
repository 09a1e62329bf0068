package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrAddr is wrapped by ParseAddr's errors.
var ErrAddr = errors.New("listener: bad address")

// ParseAddr checks that s is HOST:PORT with a numeric port in 0..65535 and a
// host that is empty, an IP, or a name.
func ParseAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrAddr, s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%w %q: port must be a number from 0 to 65535", ErrAddr, s)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("%w %q: bad host", ErrAddr, s)
	}
	return nil
}

func validHostname(h string) bool {
	for _, r := range h {
		if !(r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return len(h) <= 253
}

// Listen binds a TCP listener on addr: plain TCP, not MPTCP, Go's default
// for listeners since 1.24 where the kernel has it. Every connection from a
// plain TCP client (all of them in practice) to an MPTCP listener goes
// through MPTCP's fallback in the kernel, which under Connection: close
// load showed in profiles of the workers (mptcp_stream_accept,
// subflow_v4_req_destructor); fasthttp's prefork and ListenReusePort bind
// plain TCP.
func Listen(addr string) (*net.TCPListener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	return ln.(*net.TCPListener), nil
}

// ListenReusePort binds n listeners to addr with SO_REUSEPORT, so the kernel
// spreads new connections over them. With port 0 the first socket picks the
// port and the others join it.
func ListenReusePort(addr string, n int) ([]*net.TCPListener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	// Plain TCP, as in Listen; here it is also required: an MPTCP
	// socket's setsockopt accepts only a few SOL_SOCKET options and
	// refuses SO_ATTACH_REUSEPORT_CBPF with EOPNOTSUPP, and Steer needs it
	// to keep new connections off retired sockets.
	lc.SetMultipathTCP(false)
	lns := make([]*net.TCPListener, 0, n)
	fail := func(err error) ([]*net.TCPListener, error) {
		for _, l := range lns {
			l.Close()
		}
		return nil, fmt.Errorf("listener: %w", err)
	}
	for i := range n {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return fail(err)
		}
		lns = append(lns, ln.(*net.TCPListener))
		if i == 0 {
			addr = ln.Addr().String()
		}
	}
	return lns, nil
}

// ListenOne binds one more SO_REUSEPORT socket to the address of an existing
// one, for a slot added at run time.
func ListenOne(addr string) (*net.TCPListener, error) {
	lns, err := ListenReusePort(addr, 1)
	if err != nil {
		return nil, err
	}
	return lns[0], nil
}

// Dup returns a close-on-exec duplicate of c's descriptor as an *os.File,
// for exec.Cmd.ExtraFiles.
//
// The duplicate is made through SyscallConn with F_DUPFD_CLOEXEC instead of
// (*net.TCPListener).File: File puts the shared open file description in
// blocking mode when os/exec calls Fd on it, and then the supervisor's own
// accept loop on the original can hang and Close no longer interrupts it
// (golang/go#43894). os.NewFile of a non-blocking descriptor keeps it
// non-blocking.
func Dup(c syscall.Conn) (*os.File, error) {
	fd, err := dupCloexec(c)
	if err != nil {
		return nil, fmt.Errorf("listener: dup: %w", err)
	}
	return os.NewFile(uintptr(fd), "listener"), nil
}

// dupCloexec duplicates c's descriptor with F_DUPFD_CLOEXEC.
func dupCloexec(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

package listener

import (
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is a listening socket that the supervisor holds but does not accept
// on: a bare descriptor, outside the Go runtime's poller.
//
// A net.TCPListener is registered with the runtime's epoll instance
// (edge-triggered) from the moment it exists, whether or not anything calls
// Accept. In shared and reuseport mode the workers accept; a registered copy
// in the supervisor would wake its netpoller on every new connection for
// nothing — measured at 8–15% of a core under Connection: close load. A
// Socket keeps the socket open (so its backlog survives worker deaths) at no
// cost. Duplicates for exec.Cmd.ExtraFiles and for accept loops come from
// Dup, which works on it as on any syscall.Conn.
type Socket struct {
	fd   int
	addr net.Addr
	once sync.Once
	// The socket file a Unix listener owns (Own, Remove); "" for none.
	path     string
	dev, ino uint64
	ctime    unix.Timespec
}

// Detach moves ln's socket to a Socket and closes ln, which takes it out of
// the runtime poller. ln is closed on error too: the caller never has to.
// A TCP socket is tuned for the connections it accepts (tuneAccepted); a
// Unix listener's socket file stays where it is (Close never removes it:
// see Socket.Remove).
func Detach(ln Listener) (*Socket, error) {
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	defer ln.Close()
	nfd, err := dupCloexec(ln)
	if err != nil {
		return nil, fmt.Errorf("listener: detach: %w", err)
	}
	if _, ok := ln.Addr().(*net.TCPAddr); ok {
		if err := tuneAccepted(nfd); err != nil {
			unix.Close(nfd)
			return nil, fmt.Errorf("listener: detach: %w", err)
		}
	}
	return &Socket{fd: nfd, addr: ln.Addr()}, nil
}

// Listener is a listening socket with a descriptor: *net.TCPListener or
// *net.UnixListener.
type Listener interface {
	net.Listener
	syscall.Conn
}

// tuneAccepted sets, on a listening socket, the options Go sets on every
// connection it accepts: TCP_NODELAY and keep-alive probes after 15s idle,
// every 15s, 9 of them. Linux copies a listening socket's options to the
// sockets it accepts, so connections the supervisor hands over arrive with
// them and a worker need not spend five setsockopt calls on each.
func tuneAccepted(fd int) error {
	for _, o := range []struct{ level, opt, v int }{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return err
		}
	}
	return nil
}

// DeferAcceptTimeout is the TCP_DEFER_ACCEPT that DeferAccept sets: the
// seconds a connection whose client sends nothing waits in the kernel
// before it is accepted anyway. fasthttp's prefork (package tcplisten) and
// nginx's "deferred" set 1 too.
const DeferAcceptTimeout = 1

// DeferAccept sets TCP_DEFER_ACCEPT on a TCP listening socket. The kernel
// then completes the handshake but queues a connection for accept only
// once its client has sent data (or, for one that sends nothing, after
// DeferAcceptTimeout, on its next ACK). The accept and the first read
// then happen in one wake-up of the accepting process where they took two:
// under Connection: close load that was 10–25% of a worker's CPU per
// request, the difference with fasthttp's prefork, which sets it. A
// protocol whose server speaks first (SMTP, MySQL) would wait that second:
// hence an option.
func (s *Socket) DeferAccept() error {
	if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, DeferAcceptTimeout); err != nil {
		return fmt.Errorf("listener: TCP_DEFER_ACCEPT: %w", err)
	}
	return nil
}

// DetachAll detaches every listener, closing all of them on error.
func DetachAll(lns []*net.TCPListener) ([]*Socket, error) {
	var out []*Socket
	for i, ln := range lns {
		s, err := Detach(ln)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			for _, l := range lns[i+1:] { // Detach closed lns[i]
				l.Close()
			}
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Addr is the socket's local address.
func (s *Socket) Addr() net.Addr { return s.addr }

// Close closes the descriptor; closing twice is harmless. Only the owner may
// call it, and not while a Dup is in progress.
func (s *Socket) Close() error {
	var err error
	s.once.Do(func() { err = unix.Close(s.fd) })
	return err
}

// SyscallConn gives Dup access to the descriptor: Control only.
func (s *Socket) SyscallConn() (syscall.RawConn, error) { return socketRaw{s}, nil }

type socketRaw struct{ s *Socket }

func (r socketRaw) Control(f func(fd uintptr)) error {
	f(uintptr(r.s.fd))
	return nil
}

func (socketRaw) Read(func(fd uintptr) bool) error  { return syscall.EINVAL }
func (socketRaw) Write(func(fd uintptr) bool) error { return syscall.EINVAL }

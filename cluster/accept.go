package cluster

import (
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	listensock "github.com/prefork/prefork/internal/listener" // cluster has its own listener type
)

// socketAcceptor accepts on the listening socket a worker inherits in
// shared and reuseport mode.
//
// net.TCPListener's Accept spends, on every connection, a getsockname and
// five setsockopt calls (TCP_NODELAY and the keep-alive settings). The
// supervisor sets those options once on the listening socket, and Linux
// copies them to each accepted socket; the local address of a socket bound
// to one IP is the bound address. So this acceptor asks accept4 for the peer
// address, takes the connection non-blocking, and registers it with the
// poller: three syscalls where net.TCPListener makes nine.
type socketAcceptor struct {
	f     *os.File
	rc    syscall.RawConn
	addr  net.Addr
	local net.Addr   // nil when bound to a wildcard address: ask per connection
	proxy *proxyConf // connections start with a PROXY header; nil: they do not
	index int        // the listener's, in the supervisor's order

	// What one accept leaves for Accept: set by try, which is made once
	// (a closure per call would allocate on every connection).
	try  func(fd uintptr) bool
	nfd  int
	sa   unix.RawSockaddrAny
	aerr error
}

func newSocketAcceptor(f *os.File) (*socketAcceptor, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	a := &socketAcceptor{f: f, rc: rc}
	a.try = func(fd uintptr) bool {
		for {
			a.nfd, a.aerr = listensock.Accept4(int(fd), &a.sa)
			switch a.aerr {
			case nil:
				return true
			case unix.EAGAIN:
				return false // wait until the socket is readable
			case unix.ECONNABORTED, unix.EINTR:
				continue
			}
			return true
		}
	}
	var sa unix.Sockaddr
	var serr error
	rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) })
	if serr != nil {
		return nil, serr
	}
	a.addr = tcpAddr(sa)
	if ta, ok := a.addr.(*net.TCPAddr); !ok || !ta.IP.IsUnspecified() {
		a.local = a.addr // a Unix socket's, or an IP's
	}
	return a, nil
}

// Accept waits for a connection. Only one goroutine calls it at a time (the
// listener's Accept), as with any accept loop.
func (a *socketAcceptor) Accept() (*handedConn, error) {
	if err := a.rc.Read(a.try); err != nil {
		return nil, err // closed, or a deadline passed
	}
	if a.aerr != nil {
		// EMFILE and the like: let the server back off and retry.
		return nil, tempErr{&net.OpError{Op: "accept", Net: "tcp", Addr: a.addr, Err: a.aerr}}
	}
	peer := ipc.PeerOf(&a.sa)
	c, err := adoptConn(a.nfd, peerAddr(peer[:]), a.local)
	if err != nil {
		return nil, unusable{err}
	}
	c.since = time.Now()
	c.index = a.index
	if a.proxy != nil {
		c.px = &proxyHeader{conf: a.proxy}
	}
	return c, nil
}

func (a *socketAcceptor) Close() error                  { return a.f.Close() }
func (a *socketAcceptor) Addr() net.Addr                { return a.addr }
func (a *socketAcceptor) SetDeadline(t time.Time) error { return a.f.SetDeadline(t) }

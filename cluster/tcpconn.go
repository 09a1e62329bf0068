package cluster

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// handedConn is a TCP connection the supervisor handed over (rr mode),
// adopted without net.FileConn.
//
// net.FileConn would duplicate the descriptor, set it non-blocking with two
// fcntl calls, ask its socket type, set TCP_NODELAY and four keep-alive
// options, and close the original: about ten syscalls per connection on the
// hot path, for what the worker can do in three. The supervisor sets the
// same options on its listening socket, and Linux copies them to every
// accepted socket, so nothing needs setting here; the descriptor arrives
// non-blocking (the supervisor accepts it so), and os.NewFile only checks
// that before registering it with the poller.
//
// It offers what net/http and common middleware look for on a
// *net.TCPConn: CloseWrite, CloseRead, SetKeepAlive, SetNoDelay,
// SetLinger and SyscallConn; deadlines work through the runtime poller as
// for any net.Conn.
type handedConn struct {
	f      *os.File
	la, ra net.Addr
	index  int     // the listener it came from, in the supervisor's order
	w      *worker // counts the close; nil outside a listener
	once   sync.Once

	// For shedding (see silentSet): when it was accepted, and whether it
	// has sent anything.
	since time.Time
	state atomic.Uint32

	// For hand-back (handback.go): move is its state, nread the bytes read
	// so far and idleAt their count when the last response was written
	// (both owned by the goroutine that reads, as net/http orders its
	// reads). mmu guards the rest: waiting, a read that may hand c back is
	// blocked; woken, a wake set a past deadline on it; leave, c is asked
	// to go back (rebalancing); rd, the read deadline the server set.
	move          atomic.Uint32
	nread, idleAt uint64
	mmu           sync.Mutex
	waiting       bool
	woken         bool
	leave         bool
	rd            time.Time

	px *proxyHeader // its PROXY header, still to read (shared, reuseport); nil: none
}

// adoptConn makes a net.Conn of an accepted TCP socket. peer and local are
// the addresses when the caller knows them (nil: ask the kernel). fd must
// be non-blocking: os.NewFile leaves a blocking descriptor out of the
// poller, and deadlines would then never fire. On error fd is closed.
func adoptConn(fd int, peer net.Addr, local net.Addr) (*handedConn, error) {
	c := &handedConn{la: local, ra: peer}
	if c.la == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			c.la = tcpAddr(sa)
		}
	}
	if c.ra == nil {
		sa, err := unix.Getpeername(fd)
		if err != nil {
			// The client is already gone (ENOTCONN).
			unix.Close(fd)
			return nil, err
		}
		c.ra = tcpAddr(sa)
	}
	c.f = os.NewFile(uintptr(fd), "tcp")
	return c, nil
}

func tcpAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	}
	return &net.TCPAddr{}
}

func (c *handedConn) Read(b []byte) (int, error) {
	if c.px != nil {
		if err := c.px.read(c); err != nil {
			return 0, err
		}
	}
	if c.mayLeave(b) {
		return c.readIdle(b)
	}
	return c.read(c.f.Read(b))
}

// read accounts for a read that returned n bytes and err.
func (c *handedConn) read(n int, err error) (int, error) {
	c.nread += uint64(n)
	if n > 0 && c.state.Load() == connSilent {
		c.state.CompareAndSwap(connSilent, connHeard) // it spoke: never shed
	}
	return n, netErr("read", c, err)
}

func (c *handedConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, netErr("write", c, err)
}

func (c *handedConn) Close() error {
	if c.state.Load() == connSilent {
		c.state.CompareAndSwap(connSilent, connHeard) // nothing for shed to close
	}
	if c.w != nil {
		c.once.Do(func() {
			if c.w.back != nil {
				c.w.back.remove(c)
			}
			c.w.closed.Add(1)
			c.w.kickLoad()
			c.w.gate.update(0)
		})
	}
	return c.f.Close()
}

func (c *handedConn) LocalAddr() net.Addr { return c.la }
func (c *handedConn) RemoteAddr() net.Addr {
	if c.px != nil {
		c.px.read(c) // the client its PROXY header names
	}
	return c.ra
}

// SetDeadline and SetReadDeadline remember the read deadline, for a wake
// that lost its race to put back (readIdle).
func (c *handedConn) SetDeadline(t time.Time) error {
	c.mmu.Lock()
	defer c.mmu.Unlock()
	c.rd = t
	return c.f.SetDeadline(t)
}

func (c *handedConn) SetReadDeadline(t time.Time) error {
	c.mmu.Lock()
	defer c.mmu.Unlock()
	c.rd = t
	return c.f.SetReadDeadline(t)
}

func (c *handedConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// SyscallConn gives raw access to the socket, as *net.TCPConn's does.
func (c *handedConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

func (c *handedConn) CloseWrite() error { return c.shutdown(unix.SHUT_WR) }
func (c *handedConn) CloseRead() error  { return c.shutdown(unix.SHUT_RD) }

func (c *handedConn) SetNoDelay(on bool) error {
	return c.setInt(unix.IPPROTO_TCP, unix.TCP_NODELAY, boolInt(on))
}

func (c *handedConn) SetKeepAlive(on bool) error {
	return c.setInt(unix.SOL_SOCKET, unix.SO_KEEPALIVE, boolInt(on))
}

func (c *handedConn) SetLinger(sec int) error {
	l := unix.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return c.control(func(fd int) error { return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l) })
}

func (c *handedConn) shutdown(how int) error {
	return c.control(func(fd int) error { return unix.Shutdown(fd, how) })
}

func (c *handedConn) setInt(level, opt, v int) error {
	return c.control(func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) })
}

func (c *handedConn) control(f func(fd int) error) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// netErr turns os.File's errors into the *net.OpError a net.Conn returns,
// so that callers checking net.Error (timeouts) or io.EOF see what they
// expect from a socket.
func netErr(op string, c *handedConn, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if err == os.ErrClosed {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.la, Addr: c.ra, Err: err}
}

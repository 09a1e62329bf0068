package cluster

import (
	"net"
	"sync"
)

// tcpConn is an accepted connection that counts its close. It embeds
// *net.TCPConn so that net/http still finds ReadFrom (sendfile) and
// CloseWrite.
type tcpConn struct {
	*net.TCPConn
	w    *worker
	once sync.Once
}

func (c *tcpConn) Close() error {
	c.once.Do(c.countClose)
	return c.TCPConn.Close()
}

func (c *tcpConn) countClose() {
	c.w.closed.Add(1)
	c.w.kickLoad()
}

type conn struct {
	net.Conn
	w    *worker
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.w.closed.Add(1); c.w.kickLoad() })
	return c.Conn.Close()
}

// handed is a connection from the supervisor that counts its close; its
// methods are handedConn's.
type handed struct {
	*handedConn
	w    *worker
	once sync.Once
}

func (c *handed) Close() error {
	c.once.Do(func() { c.w.closed.Add(1); c.w.kickLoad() })
	return c.handedConn.Close()
}

func track(c net.Conn, w *worker) net.Conn {
	switch tc := c.(type) {
	case *net.TCPConn:
		return &tcpConn{TCPConn: tc, w: w}
	case *handedConn:
		return &handed{handedConn: tc, w: w}
	}
	return &conn{Conn: c, w: w}
}

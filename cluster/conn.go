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

func track(c net.Conn, w *worker) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tc, w: w}
	}
	return &conn{Conn: c, w: w}
}

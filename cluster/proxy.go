package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/proxyproto"
)

// proxyConf is -proxy-protocol as a worker that accepts (shared,
// reuseport) sees it in EnvProxy: each connection starts with a PROXY
// header, from the trusted sources only, within wait.
type proxyConf struct {
	trust proxyproto.Trust
	wait  time.Duration
}

// proxyFromEnv is EnvProxy's setting; nil when it is not set.
func proxyFromEnv() (*proxyConf, error) {
	v, ok := os.LookupEnv(ipc.EnvProxy)
	if !ok {
		return nil, nil
	}
	pc := &proxyConf{wait: time.Second}
	for part := range strings.SplitSeq(v, ";") {
		k, val, _ := strings.Cut(part, "=")
		var err error
		switch k {
		case "from":
			pc.trust, err = proxyproto.ParseTrust(val)
		case "wait":
			pc.wait, err = time.ParseDuration(val)
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: bad %s=%q: %w", ipc.EnvProxy, v, err)
		}
	}
	return pc, nil
}

// proxyHeader reads a connection's PROXY header once, on its first Read or
// RemoteAddr: on the connection's own goroutine (net/http's serve), never
// in Accept, so a slow client delays nobody else.
type proxyHeader struct {
	conf *proxyConf
	once sync.Once
	err  error
}

// errProxyHeader: the connection's PROXY header is missing, malformed,
// slow or from an untrusted source; the connection is unusable.
var errProxyHeader = errors.New("cluster: bad PROXY protocol header")

// read consumes c's header, exactly its bytes (peeked first, so that what
// follows stays for the server), and makes its client c's remote address.
func (p *proxyHeader) read(c *handedConn) error {
	p.once.Do(func() { p.err = p.readOnce(c) })
	return p.err
}

func (p *proxyHeader) readOnce(c *handedConn) error {
	if ta, ok := c.ra.(*net.TCPAddr); ok && len(p.conf.trust) > 0 {
		if a, ok := netip.AddrFromSlice(ta.IP); !ok || !p.conf.trust.Allows(a) {
			return fmt.Errorf("%w: source %v not in -proxy-from", errProxyHeader, c.ra)
		}
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	c.f.SetReadDeadline(time.Now().Add(p.conf.wait))
	defer c.f.SetReadDeadline(time.Time{})
	var buf [proxyproto.MaxHeader]byte
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false // wait for more: the poller wakes on new bytes
		case err != nil || n == 0:
			perr = fmt.Errorf("%w: closed before its header", errProxyHeader)
			return true
		}
		hl, src, err := proxyproto.Parse(buf[:n])
		switch {
		case errors.Is(err, proxyproto.ErrIncomplete) && n < len(buf):
			return false
		case err != nil:
			perr = fmt.Errorf("%w: %v", errProxyHeader, err)
			return true
		}
		if m, err := unix.Read(int(fd), buf[:hl]); err != nil || m != hl {
			perr = fmt.Errorf("%w: cannot consume it", errProxyHeader)
			return true
		}
		if src.IsValid() {
			c.ra = net.TCPAddrFromAddrPort(src)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errProxyHeader, err)
	}
	return perr
}

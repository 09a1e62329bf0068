package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/listener"
	"github.com/prefork/prefork/internal/nodeipc"
)

// nodeListener is one of the mode's listening sockets as a node link
// keeps it: the worker's servers ask for it by its address.
type nodeListener struct {
	f    *os.File
	addr net.Addr // *net.TCPAddr or *net.UnixAddr
}

// sockname is what a round-robin server reports as its address: the
// TCP address, nil for a Unix path (Node's primary sends none for a pipe).
func (ln nodeListener) sockname() *nodeipc.Sockname {
	if a, ok := ln.addr.(*net.TCPAddr); ok {
		return nodeipc.SocknameOf(a)
	}
	return nil
}

// String is the address as -listen spells it.
func (ln nodeListener) String() string {
	if a, ok := ln.addr.(*net.UnixAddr); ok {
		return "unix:" + a.Name
	}
	return ln.addr.String()
}

// keep duplicates the worker's listening sockets (files, in listener
// order) for its queryServer, and learns their addresses.
func (l *nodeLink) keep(files []*os.File) error {
	for _, file := range files {
		f, err := listener.Dup(file)
		var a net.Addr
		if err == nil {
			if a, err = localAddr(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("supervisor: keep the listening socket for a node worker: %w", err)
		}
		l.lns = append(l.lns, nodeListener{f: f, addr: a})
	}
	return nil
}

// localAddr is the address f's socket is bound to.
func localAddr(f *os.File) (net.Addr, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	cerr := raw.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) })
	if err = errors.Join(err, cerr); err != nil {
		return nil, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}, nil
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}, nil
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}, nil
	}
	return nil, fmt.Errorf("supervisor: listening socket is neither TCP nor Unix (%T)", sa)
}

// serves is the index of the listener q asks for, -1 if none: a Unix
// path by its path, a TCP port by its port (whatever the host: an app
// given PORT listens on every interface), port 0 the first TCP listener.
func (l *nodeLink) serves(q nodeipc.QueryServer) int {
	first := -1
	for i, ln := range l.lns {
		switch a := ln.addr.(type) {
		case *net.UnixAddr:
			if q.AddressType == "-1" && (a.Name == q.Address || a.Name == filepath.Clean(q.Address)) {
				return i
			}
		case *net.TCPAddr:
			if q.AddressType == "-1" {
				continue
			}
			if first < 0 {
				first = i
			}
			if q.Port == a.Port {
				return i
			}
		}
	}
	if q.Port == 0 && q.AddressType != "-1" {
		return first
	}
	return -1
}

// served is the listeners' addresses, for a log line.
func (l *nodeLink) served() string {
	addrs := make([]string, len(l.lns))
	for i, ln := range l.lns {
		addrs[i] = ln.String()
	}
	return strings.Join(addrs, ", ")
}

// A node worker's listen for an address no listener serves (a stray
// listen): an app started without PORT binds its own default port, and
// the supervisor's listeners accept connections nothing serves. Port 0
// (PORT=0, or listen() with no port) is the supervisor's first listener,
// as the app's "any port" is whatever the supervisor chose.

// strayListen is the error that names a stray listen: the worker, the
// address it asked for and the ones the supervisor serves.
func (l *nodeLink) strayListen(p *process, q nodeipc.QueryServer) error {
	return fmt.Errorf("worker %d (pid %d) listens on %s, which prefork does not serve (it serves %s)",
		p.slot.id, p.pid, queryAddr(q), l.served())
}

// queryAddr is the address q asks for as -listen would spell it.
func queryAddr(q nodeipc.QueryServer) string {
	if q.AddressType == "-1" {
		return "unix:" + q.Address
	}
	return net.JoinHostPort(q.Address, strconv.Itoa(q.Port))
}

// stray answers a stray listen, on the reader's goroutine. It is a
// warning, and then what Node's primary would do: a TCP port gets a socket
// the supervisor binds for it, a Unix path is refused. Under
// -strict-listen it is refused, and the worker is killed: its start
// fails (evCall to strictListen), before it can exit of the refusal.
func (l *nodeLink) stray(s *Supervisor, p *process, q nodeipc.QueryServer) error {
	err := l.strayListen(p, q)
	if s.cfg.StrictListen {
		s.post(evCall{fn: func(s *Supervisor) { s.strictListen(p, err) }})
		return l.w.ReplyError(q, syscall.EADDRINUSE)
	}
	s.log.Warn(err.Error(), p.fields(zap.String("address", queryAddr(q)), zap.String("serves", l.served()))...)
	if q.AddressType == "-1" {
		return l.refuse(s, p, q, "a Unix path no listener serves")
	}
	sock, berr := l.ports.get(q.Address, q.Port)
	if berr != nil {
		return l.refuse(s, p, q, "cannot bind it: "+berr.Error())
	}
	return l.replyShared(q, sock)
}

// strictListen fails p for a stray listen under -strict-listen: a failed
// start when something waits for it (the supervisor starting, a rollout,
// a scale-up), else a crash of its slot, replaced as any.
func (s *Supervisor) strictListen(p *process, err error) {
	if s.live[p.pid] != p || p.asked {
		return
	}
	s.log.Error(err.Error()+"; -strict-listen: killing it", p.fields()...)
	if p.state == control.StateStarting {
		p.asked, p.reason = true, control.CauseProtocol
		p.proc.Signal(syscall.SIGKILL)
		if s.failedStarting(p, fmt.Errorf("-strict-listen: %w", err)) || p.slot.cur != p {
			return
		}
		s.vacate(p.slot)
		s.crashed(p.slot, p.uptime(s.sys.Now()), control.CauseProtocol)
		return
	}
	s.health.replace(p, control.CauseProtocol)
}

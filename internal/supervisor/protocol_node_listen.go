package supervisor

import (
	"fmt"
	"net"
	"strconv"
	"syscall"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/nodeipc"
)

// A node worker's listen for an address no listener serves (a stray
// listen): an app started without PORT binds its own default port, and
// the supervisor's listeners accept connections nothing serves. Port 0
// (PORT=0, or listen() with no port) is the supervisor's first listener,
// as the app's "any port" is whatever the supervisor chose.

// strayListen is the error that names a stray listen: the worker, the
// address it asked for and the ones the supervisor serves.
func (l *nodeLink) strayListen(p *process, q nodeipc.QueryServer) error {
	return fmt.Errorf("worker %d (pid %d) listens on %s, which prefork does not serve (it serves %s)",
		p.slot.id, p.pid, queryAddr(q), l.addr)
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
	s.log.Warn(err.Error(), p.fields(zap.String("address", queryAddr(q)), zap.String("serves", l.addr.String()))...)
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

package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
	"github.com/prefork/prefork/internal/nodeipc"
	"github.com/prefork/prefork/internal/sticky"
)

// nodeEvents buffers what a node worker's channel reports before the
// link's reader passes it on.
const nodeEvents = 16

// node is an unmodified Node.js cluster app: the supervisor stands where
// Node's primary would, speaking the cluster protocol on Node's own IPC
// channel (fd 3, NODE_CHANNEL_FD) to a process started with NODE_UNIQUE_ID
// set to its slot, which makes cluster.isPrimary false in it. Its servers'
// listen calls ask for one of the mode's sockets by address (queryServer):
// a TCP port or a Unix path, one server per listener. In shared and
// reuseport mode they get it as a handle, as under Node's SCHED_NONE; in
// rr mode, as under SCHED_RR, a key and no handle, and the supervisor's
// handoff sends each connection as a newconn message for its listener's
// key (handoff.Node).
// Its first 'listening' makes it ready; process.send reaches ctl events; a
// drain is Node's worker.disconnect(). Node's protocol has no heartbeats.
//
// A server on another port gets a socket the supervisor binds for it, as
// Node's primary binds one: one per address, shared by every worker and
// kept until the supervisor stops (ports). It gets it as a handle in every
// mode: the supervisor round-robins its own listeners only. Each such
// listen is a warning, or a failed start under -strict-listen
// (protocol_node_listen.go).
type node struct{ ports *ports }

func newNode() node { return node{ports: &ports{socks: map[string]*listener.Socket{}}} }

func (node) beats() bool    { return false }
func (node) receives() bool { return false }
func (n node) stop()        { n.ports.close() }

func (n node) open(sl *slot) (link, error) {
	ch, remote, err := nodeipc.Pair()
	if err != nil {
		return nil, fmt.Errorf("worker node channel: %w", err)
	}
	return &nodeLink{id: sl.id, ch: ch, remote: remote, stop: make(chan struct{}), ports: n.ports}, nil
}

// ports are the sockets the supervisor bound for node workers' servers on
// ports other than -listen's. Worker readers ask for them concurrently.
type ports struct {
	mu     sync.Mutex
	socks  map[string]*listener.Socket // by HOST:PORT as asked
	closed bool
}

// get returns the socket for address:port, binding it on first use.
func (ps *ports) get(address string, port int) (*listener.Socket, error) {
	addr := net.JoinHostPort(address, strconv.Itoa(port))
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return nil, errStopping
	}
	if sock, ok := ps.socks[addr]; ok {
		return sock, nil
	}
	ln, err := listener.Listen(addr)
	if err != nil {
		return nil, err
	}
	sock, err := listener.Detach(ln)
	if err != nil {
		return nil, err
	}
	ps.socks[addr] = sock
	return sock, nil
}

// close stops the supervisor listening on them: at stop, with the
// supervisor's own sockets.
func (ps *ports) close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.closed = true
	for _, sock := range ps.socks {
		sock.Close()
	}
}

type nodeLink struct {
	id     int              // the slot: NODE_UNIQUE_ID, cluster.worker.id
	ch     *nodeipc.Channel // until started hands it to w
	remote *os.File         // the worker's end; closed once it has started
	w      *nodeipc.Worker  // set by started, on the owner
	stop   chan struct{}    // closed by close: the reader stops

	// lns are the mode's sockets, in listener order, kept for the
	// worker's queryServer (spawn closes its own copies once the worker
	// has started), with their addresses. Set by command before the
	// reader starts (protocol_node_listen.go).
	lns   []nodeListener
	ports *ports // the sockets bound for other ports
	// socketio: -sticky socketio; the worker is ready when online.
	// claims: -sticky; its claim messages go to the handoff
	// (protocol_node_sticky.go). Set by command.
	socketio, claims bool
}

func (l *nodeLink) control() (*ipc.Channel, *os.File) { return nil, nil }

func (l *nodeLink) command(s *Supervisor, cmd *exec.Cmd, h handles) {
	l.socketio, l.claims = s.cfg.Sticky == sticky.SocketIO, s.cfg.Sticky != ""
	cmd.Env = append(cmd.Env, nodeipc.Environ(3, l.id)...)
	cmd.ExtraFiles = []*os.File{l.remote} // fd 3: NODE_CHANNEL_FD
	if err := l.keep(h.files); err != nil && cmd.Err == nil {
		cmd.Err = err // Start fails with it: nothing runs
	}
}

// started closes the worker's end, which it has inherited, and starts the
// cluster protocol on the supervisor's.
func (l *nodeLink) started(s *Supervisor, p *process) {
	l.remote.Close()
	l.remote = nil
	events := make(chan nodeipc.Event, nodeEvents)
	l.w = nodeipc.NewWorker(l.ch, events)
	// Before its listen is answered, so before any newconn: each answer
	// goes to the handoff from the channel's reader, without a hop.
	l.w.OnAccepted(func(string) { l.answered(s, p, -1, false) })
	l.ch = nil
	go func() {
		defer close(p.read)
		l.read(s, p, events)
	}()
}

// exited: the worker's end of the channel closed with it, so the reader
// gets Disconnected by itself.
func (l *nodeLink) exited() {}

// drain is Node's worker.disconnect(): the worker closes its servers,
// then the channel, and exits once its event loop is empty. The kill
// timer armed by drain follows after -grace if it does not.
func (l *nodeLink) drain(s *Supervisor, p *process) {
	if s.live[p.pid] != p {
		return
	}
	if err := l.w.Disconnect(); err != nil {
		s.log.Warn("could not ask node worker to disconnect; terminating it", p.fields(zap.Error(err))...)
		terminate(s, p)
	}
}

// send is an application message on Node's channel: the worker's
// process.on('message') gets msg's JSON value, or msg as a string when it
// is not JSON, as a Node primary's worker.send would pass them. The
// channel queues at most nodeipc.MaxQueued lines: past that it is an
// error, never a wait.
func (l *nodeLink) send(_ context.Context, msg []byte) error {
	if l.w == nil {
		return errors.New("supervisor: node worker not started")
	}
	if json.Valid(msg) {
		return l.w.Send(json.RawMessage(msg))
	}
	return l.w.Send(string(msg))
}

func (l *nodeLink) close() {
	// The Worker first, so that it reports nothing after the reader has
	// drained. The reader is not waited for: it may be posting to the
	// owner, which runs close. It stops at l.stop and finishes what is left.
	if l.w != nil {
		l.w.Close()
	}
	close(l.stop)
	if l.ch != nil { // never started
		l.ch.Close()
	}
	if l.remote != nil {
		l.remote.Close()
	}
	for _, ln := range l.lns {
		ln.f.Close()
	}
}

// read passes on what a node worker's channel reports until it ends or
// the link closes, boundedly, as a prefork worker's reader does.
func (l *nodeLink) read(s *Supervisor, p *process, events <-chan nodeipc.Event) {
	g := newGuard()
	for {
		var ev nodeipc.Event
		select {
		case <-l.stop: // first, even when events wait too
			l.finish(s, p, events)
			return
		default:
		}
		select {
		case ev = <-events:
		case <-l.stop:
			l.finish(s, p, events)
			return
		}
		switch v := ev.Value.(type) {
		case nodeipc.Disconnected:
			if errors.Is(v.Err, nodeipc.ErrLineTooLong) {
				// Its channel is gone: replaced at once, as a protocol
				// breaker, not taken for a crash when it exits.
				s.post(evProtocol{p: p, err: fmt.Errorf("supervisor: node channel: a message over the %d MiB bound: %w",
					nodeipc.MaxLine>>20, v.Err), count: maxProtocolErrors})
			}
			return
		case nodeipc.Online:
			l.online(s, p)
		case nodeipc.Listening:
			s.post(evReady{p: p})
		case nodeipc.QueryServer:
			l.queryServer(s, p, v)
		case nodeipc.Message:
			closeNodeFD(ev)
			if key, claim, ok := stickyMessage(v.Body); ok && l.claims {
				if claim {
					l.claim(s, p, key)
				}
				continue
			}
			s.messages.passMessage(p, v.Body)
		case nodeipc.ExitedAfterDisconnect:
			s.post(evLeaving{p: p})
		case nodeipc.Malformed:
			g.broke(s, p, fmt.Errorf("supervisor: node channel: %w", v.Err))
		case nodeipc.Accepted:
			l.answered(s, p, -1, false)
		case nodeipc.Refused:
			l.answered(s, p, v.FD, !v.Gone)
		case nodeipc.ServerClosed:
			if n := handoff.NodeOf(p.t); n != nil {
				n.ServerClosed(s.mode.handoff(), v.Key)
			}
		}
	}
}

// finish closes what the Worker reported and nobody took, once
// Close has stopped it reporting; a connection it gave back goes to
// another worker.
func (l *nodeLink) finish(s *Supervisor, p *process, events <-chan nodeipc.Event) {
	for {
		select {
		case ev := <-events:
			if v, ok := ev.Value.(nodeipc.Refused); ok {
				l.answered(s, p, v.FD, !v.Gone)
				continue
			}
			closeNodeFD(ev)
		default:
			return
		}
	}
}

// answered passes p's answer to a connection handed to it on to the
// handoff: taken (fd < 0), or fd given back, refused or not answered
// before the channel ended. Only rr hands connections.
func (l *nodeLink) answered(s *Supervisor, p *process, fd int, refused bool) {
	n := handoff.NodeOf(p.t)
	if n == nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	n.Answered(s.mode.handoff(), fd, refused)
}

func closeNodeFD(ev nodeipc.Event) {
	if v, ok := ev.Value.(nodeipc.Message); ok && v.FD >= 0 {
		unix.Close(v.FD)
	}
}

// queryServer answers a worker's listen call, on the reader's goroutine:
// the address of one of the supervisor's listeners (port 0: its first TCP
// one) gets that listener's socket, or in rr mode its connections
// (roundRobin); another port or a unix path is a stray listen (stray): a
// warning and a socket the supervisor binds for it (and keeps for every
// worker), or a failed start under -strict-listen; a UDP socket fails
// with EADDRINUSE.
func (l *nodeLink) queryServer(s *Supervisor, p *process, q nodeipc.QueryServer) {
	var err error
	i := l.serves(q) // protocol_node_listen.go
	switch {
	case q.AddressType != "4" && q.AddressType != "6" && q.AddressType != "-1":
		err = l.refuse(s, p, q, "not a TCP server")
	case i < 0:
		err = l.stray(s, p, q)
	case handoff.NodeOf(p.t) != nil:
		err = l.roundRobin(s, p, q, i)
	default:
		err = l.replyShared(q, l.lns[i].f)
	}
	select {
	case <-l.stop:
		return // the worker has exited: its listen needs no answer
	default:
	}
	if err != nil {
		s.log.Warn("could not answer node worker's listen", p.fields(zap.Error(err))...)
	}
}

// roundRobin answers q as Node's primary does under SCHED_RR, with
// listener i's address and no handle, and lets the handoff send the
// worker listener i's connections for q's key. One server per worker and
// listener takes them: a second on the same address fails with EADDRINUSE, as it would under Node's
// primary, which cannot bind a port twice.
func (l *nodeLink) roundRobin(s *Supervisor, p *process, q nodeipc.QueryServer, i int) error {
	n := handoff.NodeOf(p.t)
	if !n.Accepts(i, q.Key) {
		return l.refuse(s, p, q, "another of its servers takes the supervisor's connections")
	}
	if err := l.w.ReplyRoundRobin(q, l.lns[i].sockname()); err != nil {
		return err
	}
	// After the reply: the worker's channel carries messages in order, so
	// its server exists before the first newconn for it arrives.
	n.Listen(s.mode.handoff(), l.w, i, q.Key)
	return nil
}

// replyShared answers q with sock as the listening handle.
func (l *nodeLink) replyShared(q nodeipc.QueryServer, sock syscall.Conn) error {
	raw, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	// Control holds the descriptor open while the channel duplicates it,
	// even if it is closed meanwhile.
	cerr := raw.Control(func(fd uintptr) { err = l.w.ReplyShared(q, int(fd)) })
	return errors.Join(err, cerr)
}

// refuse fails the worker's listen with EADDRINUSE, as Node's primary does
// when it cannot bind, and says why in the log.
func (l *nodeLink) refuse(s *Supervisor, p *process, q nodeipc.QueryServer, why string) error {
	s.log.Warn("refusing node worker's listen: "+why, p.fields(zap.String("address", q.Address), zap.Int("port", q.Port), zap.String("address_type", q.AddressType))...)
	return l.w.ReplyError(q, syscall.EADDRINUSE)
}

// onLeaving: a node worker disconnected itself (cluster.worker.disconnect()
// in it), so its exit is intended, as exitedAfterDisconnect tells Node's
// primary. It is draining now: its slot gets a new worker at once, without
// a crash's backoff, and the old one has -grace to exit.
func (s *Supervisor) onLeaving(p *process) {
	if s.live[p.pid] != p || p.asked {
		return
	}
	if s.reloader.roll != nil && s.reloader.roll.next == p {
		return // a rollout's new worker: its exit fails the rollout
	}
	s.log.Info("worker disconnected itself", p.fields()...)
	s.dismiss(p, control.CauseDisconnect)
	s.emit(p, control.Event{Kind: control.EventDrain, Reason: control.CauseDisconnect})
	s.after(s.cfg.Grace, evKillDue{p: p})
	if p.slot.cur == p {
		s.forks.respawnAfter(p.slot, control.CauseDisconnect)
	}
}

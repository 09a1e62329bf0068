package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/settings"
)

// Worker protocols (-worker-protocol): how the supervisor speaks to a
// worker.
const (
	ProtocolPrefork = settings.ProtocolPrefork
	ProtocolNode    = settings.ProtocolNode
	ProtocolSystemd = settings.ProtocolSystemd
	ProtocolPlain   = settings.ProtocolPlain
)

// protocol is how the supervisor speaks to its workers: one type per
// -worker-protocol, chosen once by newProtocol. Everything a kind does
// differently happens through it and the link it opens for each worker.
type protocol interface {
	// open makes a new worker's link to the supervisor, before the
	// process starts. On error nothing is left open.
	open(sl *slot) (link, error)
	// beats reports whether every ready worker sends heartbeats. If not,
	// hang detection watches a worker only from its first healthy beat.
	beats() bool
	// receives reports whether a worker can be handed connections over a
	// channel to the supervisor (rr, and reuseport's vacant slots).
	receives() bool
	// stop closes what the protocol holds for all workers, when the
	// supervisor stops accepting.
	stop()
}

// link is one worker's channel to the supervisor under its protocol.
type link interface {
	// control is the supervisor's end of the worker's prefork control
	// channel and the worker's end, which the mode may make the worker's
	// handoff target; nil, nil when it has none.
	control() (*ipc.Channel, *os.File)
	// command sets what the worker gets: its descriptors (h.file is what
	// the mode gives it), its environment and, for a shim, its program.
	command(s *Supervisor, cmd *exec.Cmd, h handles)
	// started runs on the owner once p runs: it starts reading what the
	// worker says, closing p.read when the reader stops; a worker that
	// says nothing is ready now.
	started(s *Supervisor, p *process)
	// exited tells the reader, from the waiter goroutine, that the worker
	// has exited: it takes what is queued and stops.
	exited()
	// drain asks the worker to finish its connections and exit.
	drain(s *Supervisor, p *process)
	// close closes the supervisor's end, after the worker's exit or a
	// failed start.
	close()
}

// sender is a link that can carry application messages to its worker
// (Node's worker.send). send may wait for room until ctx is done: it runs
// off the owner goroutine.
type sender interface {
	send(ctx context.Context, msg []byte) error
}

// newProtocol returns the protocol named by -worker-protocol (validated
// with the flags).
func newProtocol(cfg Config) protocol {
	switch cfg.WorkerProtocol {
	case ProtocolSystemd:
		return &systemd{hang: cfg.HangTimeout}
	case ProtocolPlain:
		return plain{}
	case ProtocolNode:
		return newNode()
	}
	return prefork{}
}

// prefork is the default protocol: the worker links the cluster package
// and gets its control channel at fd 3 and the mode's descriptor at fd 4.
type prefork struct{}

func (prefork) beats() bool    { return true }
func (prefork) receives() bool { return true }
func (prefork) stop()          {}

func (prefork) open(*slot) (link, error) {
	ctl, remote, err := ipc.Pair()
	if err != nil {
		return nil, fmt.Errorf("worker control channel: %w", err)
	}
	return &preforkLink{ctl: ctl, remote: remote}, nil
}

type preforkLink struct {
	ctl    *ipc.Channel
	remote *os.File // the worker's end; closed by spawn once it has started
}

func (l *preforkLink) control() (*ipc.Channel, *os.File) { return l.ctl, l.remote }

func (l *preforkLink) command(s *Supervisor, cmd *exec.Cmd, h handles) {
	cmd.Env = append(cmd.Env,
		ipc.EnvControlFD+"="+strconv.Itoa(ipc.ControlFD),
		ipc.EnvListenFD+"="+strconv.Itoa(ipc.ListenFD),
		ipc.EnvListenAddr+"="+addrOf(s.mode),
		ipc.EnvFeatures+"="+strconv.FormatUint(uint64(offered(h.t, s.cfg.Handback, len(s.mode.listeners()))), 10),
	)
	if lns := s.mode.listeners(); len(lns) > 1 {
		cmd.Env = append(cmd.Env, ipc.EnvListeners+"="+listenersEnv(lns))
	}
	if s.mode.handoff().LoadReports() {
		cmd.Env = append(cmd.Env, ipc.EnvLoadReports+"=1")
	}
	if s.cfg.ProxyProtocol && s.cfg.Mode != ipc.ModeRR {
		// The worker accepts: its listener reads the header (in rr the
		// handoff did, and the client travels as the peer address).
		cmd.Env = append(cmd.Env, ipc.EnvProxy+"=from="+s.cfg.ProxyFrom+";wait="+orDefault(s.cfg.ProxyWait, settings.DefaultProxyWait).String())
	}
	cmd.ExtraFiles = append([]*os.File{l.remote}, h.files...) // fds 3, and 4...
}

// offered is what the supervisor offers a worker reached over t:
// everything, but hand-back only when t's transport is a channel of the
// worker's own for connections to come back on (rr's), and -handback;
// listener indexes only when there are several listeners.
func offered(t *handoff.Target, handBack bool, listeners int) ipc.Features {
	f := ipc.Supported
	if !handBack || !handoff.TakesBack(t) {
		f &^= ipc.FeatureHandBack
	}
	if listeners < 2 {
		f &^= ipc.FeatureListeners // one listener: the frames stay as they were
	}
	return f
}

func (l *preforkLink) started(s *Supervisor, p *process) {
	go func() {
		defer close(p.read)
		l.read(s, p)
	}()
}

// exited wakes the reader if it waits: what the worker sent is queued.
func (l *preforkLink) exited() { l.ctl.SetReadDeadline(time.Now()) }
func (l *preforkLink) close()  { l.ctl.Close() }

// drain sends p the drain frame. A full channel (a reuseport worker busy
// taking a backlog handed to it over that channel) is retried until the
// kill timer fires; any other failure means the worker cannot hear us, and
// it is killed.
func (l *preforkLink) drain(s *Supervisor, p *process) {
	if s.live[p.pid] != p {
		return
	}
	grace := uint32(min(s.cfg.Grace.Milliseconds(), 1<<32-1))
	err := l.ctl.Send(ipc.AppendUint32(nil, ipc.TypeDrain, grace), nil)
	switch {
	case err == nil:
	case errors.Is(err, ipc.ErrWouldBlock):
		s.after(drainRetry, evDrainDue{p: p})
	default:
		s.log.Warn("could not ask worker to drain; killing it", p.fields(zap.Error(err))...)
		p.proc.Signal(syscall.SIGKILL)
	}
}

// send is a message frame on the control channel, which the worker's
// cluster.Messages reads. While the worker's queue is full it waits for
// room until ctx is done (then ipc.ErrWouldBlock).
func (l *preforkLink) send(ctx context.Context, msg []byte) error {
	frame, err := ipc.AppendFrame(nil, ipc.TypeMessage, msg)
	if err != nil {
		return err
	}
	return l.ctl.SendWait(ctx, frame)
}

// plain is a worker that takes an inherited socket at fd 3 and nothing
// else: it is ready once it has started, and SIGTERM drains it.
type plain struct{}

func (plain) beats() bool              { return false }
func (plain) receives() bool           { return false }
func (plain) stop()                    {}
func (plain) open(*slot) (link, error) { return plainLink{}, nil }

type plainLink struct{}

func (plainLink) control() (*ipc.Channel, *os.File) { return nil, nil }

// command gives the worker every listener's socket from fd 3, in
// listener order; with several, LISTEN_FDS and LISTEN_FDNAMES say how many
// and which (one socket at fd 3 is all a plain worker ever had).
func (plainLink) command(s *Supervisor, cmd *exec.Cmd, h handles) {
	if len(h.files) > 1 {
		cmd.Env = append(cmd.Env, listenFDs(s.mode.listeners())...)
	}
	cmd.ExtraFiles = h.files // fd 3...
}

// started: the process runs, and exec succeeded (os/exec's Start waits
// for it), so the inherited socket is in the worker's hands.
func (plainLink) started(s *Supervisor, p *process) {
	close(p.read)
	s.enqueue(evReady{p: p})
}

func (plainLink) exited()                         {}
func (plainLink) drain(s *Supervisor, p *process) { terminate(s, p) }
func (plainLink) close()                          {}

// terminate drains a worker without a control channel: SIGTERM, and its
// kill timer (armed by drain) follows with SIGKILL after -grace.
func terminate(s *Supervisor, p *process) {
	if s.live[p.pid] == p {
		p.proc.Signal(syscall.SIGTERM)
	}
}

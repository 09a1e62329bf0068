package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// procState is where a worker process is in its life.
type procState int

const (
	stateStarting procState = iota
	stateReady
	stateDraining
	stateExited
)

func (s procState) String() string {
	return [...]string{"starting", "ready", "draining", "exited"}[s]
}

// process is one worker process. Only the owner goroutine touches it, except
// the fields its reader and waiter goroutines were given at spawn.
type process struct {
	slot    *slot
	gen     int
	pid     int
	cmd     *exec.Cmd
	ctl     *ipc.Channel
	t       *target // rr mode
	state   procState
	started time.Time
	readyAt time.Time
	beatAt  time.Time
	beat    ipc.Heartbeat
	asked   bool   // the supervisor asked it to exit
	reason  string // why it was asked: stop, reload, scale, hang, recycle

	maxRequests int // recycle after this many requests; 0: never
	cpuTicks    uint64
	cpuAt       time.Time
	cpuPct      float64
}

func (p *process) uptime() time.Duration { return time.Since(p.started) }

// Events from a process's goroutines to the owner goroutine.
type (
	evExit struct {
		p   *process
		err error // from cmd.Wait
	}
	evReady struct {
		p    *process
		uses ipc.Features // what the worker's ready frame announced
	}
	evBeat struct {
		p  *process
		hb ipc.Heartbeat
	}
	evMessage struct {
		p   *process
		msg []byte
	}
)

// spawn starts a worker for slot in generation gen.
func (s *Supervisor) spawn(sl *slot, gen int) (*process, error) {
	ctl, ctlRemote, err := ipc.Pair()
	if err != nil {
		return nil, err
	}
	keepCtl := s.cfg.Mode == ipc.ModeReusePort // see below
	if !keepCtl {
		defer ctlRemote.Close()
	}
	var t *target
	var src *os.File // the worker's fd 4
	switch s.cfg.Mode {
	case ipc.ModeRR:
		local, remote, err := ipc.Pair()
		if err != nil {
			ctl.Close()
			return nil, err
		}
		t = &target{slot: sl.id, ch: local}
		src = remote
	case ipc.ModeShared:
		src, err = listener.Dup(s.ln)
	case ipc.ModeReusePort:
		src, err = listener.Dup(sl.ln)
	}
	if err != nil {
		ctl.Close()
		return nil, err
	}
	cmd := exec.Command(s.cfg.Command[0], s.cfg.Command[1:]...)
	cmd.Env = append(workerEnv(),
		ipc.EnvWorkerID+"="+strconv.Itoa(sl.id),
		ipc.EnvMode+"="+s.cfg.Mode,
		ipc.EnvGeneration+"="+strconv.Itoa(gen),
		ipc.EnvControlFD+"="+strconv.Itoa(ipc.ControlFD),
		ipc.EnvListenFD+"="+strconv.Itoa(ipc.ListenFD),
		ipc.EnvListenAddr+"="+s.addr,
		ipc.EnvFeatures+"="+strconv.FormatUint(uint64(ipc.Supported), 10),
	)
	if s.loadReports() {
		cmd.Env = append(cmd.Env, ipc.EnvLoadReports+"=1")
	}
	cmd.ExtraFiles = []*os.File{ctlRemote, src} // fds 3 and 4
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	var capture *outputCapture
	if s.cfg.WorkerOutput == "capture" {
		if capture, err = newOutputCapture(); err != nil {
			ctl.Close()
			src.Close()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = capture.stdoutW, capture.stderrW
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Die with the supervisor (see spawner for the thread caveat).
		Pdeathsig: syscall.SIGKILL,
		// Own process group: a terminal's Ctrl-C reaches the supervisor
		// only, which then drains the workers in order.
		Setpgid:    true,
		Credential: s.cred,
	}
	err = s.spawner.start(cmd)
	if capture != nil {
		capture.started(err == nil, s.log, sl.id, cmd)
	}
	if err != nil || t == nil {
		src.Close()
	}
	if err != nil {
		if keepCtl {
			ctlRemote.Close()
		}
		ctl.Close()
		if t != nil {
			t.ch.Close()
		}
		return nil, fmt.Errorf("worker %s: %w", s.cfg.Command[0], unwrapExec(err))
	}
	if t != nil {
		// Keep the worker's end of the handoff channel: see target.keep.
		if t.keep, err = ipc.NewChannel(src); err != nil {
			s.log.Error("keeping handoff channel", zap.Error(err))
		}
	}
	if keepCtl {
		// In reuseport mode connections reach a worker over its control
		// channel only when another slot's backlog is adopted; keep the
		// worker's end so that those, too, survive its death.
		t = &target{slot: sl.id, ch: ctl}
		if t.keep, err = ipc.NewChannel(ctlRemote); err != nil {
			s.log.Error("keeping control channel", zap.Error(err))
		}
	}
	p := &process{slot: sl, gen: gen, pid: cmd.Process.Pid, cmd: cmd, ctl: ctl, t: t, started: time.Now()}
	// Wait exactly once, from a goroutine started right after Start.
	go func() { s.post(evExit{p: p, err: cmd.Wait()}) }()
	go s.readControl(p)
	return p, nil
}

// unwrapExec turns "fork/exec /x: no such file or directory" into a message
// that names the path once.
func unwrapExec(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// workerEnv is the supervisor's environment minus what belongs to the
// supervisor alone.
func workerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, ipc.EnvPrefix),
			k == "LISTEN_FDS", k == "LISTEN_PID", k == "LISTEN_FDNAMES",
			k == "NOTIFY_SOCKET", k == "WATCHDOG_USEC", k == "WATCHDOG_PID":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// readControl forwards a worker's frames to the owner goroutine until the
// channel closes. Load frames, the hot ones, update the target directly.
func (s *Supervisor) readControl(p *process) {
	buf := make([]byte, ipc.MaxFrame)
	bad := 0
	for {
		f, _, err := p.ctl.Recv(buf, nil)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return
			}
			// A malformed frame is the worker's bug: log it (boundedly)
			// and go on; it loses nothing.
			if bad++; bad <= 10 {
				s.log.Warn("malformed frame from worker", zap.Int("slot", p.slot.id), zap.Int("pid", p.pid), zap.Error(err))
				s.emit("protocol", p, "error", err.Error(), "count", bad)
			}
			continue
		}
		switch f.Type {
		case ipc.TypeReady:
			if p.t != nil && f.Features()&ipc.FeaturePeers != 0 {
				p.t.peers.Store(true) // before the owner adds it to the balancer
			}
			s.post(evReady{p: p, uses: f.Features()})
		case ipc.TypeHeartbeat:
			s.post(evBeat{p: p, hb: f.Heartbeat()})
		case ipc.TypeLoad:
			if p.t != nil {
				p.t.closed.Store(f.Uint32())
			}
		case ipc.TypeMessage:
			s.post(evMessage{p: p, msg: append([]byte(nil), f.Payload...)})
		default:
			s.log.Warn("unexpected frame from worker", zap.Int("slot", p.slot.id), zap.Stringer("type", f.Type))
			s.emit("protocol", p, "error", "unexpected frame type "+f.Type.String(), "count", bad)
		}
	}
}

// exitStatus says how a process ended: the signal that killed it, or its
// exit code. ok is false when Wait could not tell (st nil).
func exitStatus(st *os.ProcessState) (signal string, code int, ok bool) {
	if st == nil {
		return "", 0, false
	}
	if ws, isWS := st.Sys().(syscall.WaitStatus); isWS && ws.Signaled() {
		return ws.Signal().String(), 0, true
	}
	return "", st.ExitCode(), true
}

// exitFields describes how a process ended, for logs.
func exitFields(err error, st *os.ProcessState) []zap.Field {
	sig, code, ok := exitStatus(st)
	switch {
	case !ok:
		return []zap.Field{zap.Error(err)}
	case sig != "":
		return []zap.Field{zap.String("signal", sig)}
	}
	return []zap.Field{zap.Int("code", code)}
}

// exitString describes how a process ended, for error messages.
func exitString(st *os.ProcessState) string {
	sig, code, ok := exitStatus(st)
	switch {
	case !ok:
		return "unknown status"
	case sig != "":
		return "killed by " + sig
	}
	return "exit code " + strconv.Itoa(code)
}

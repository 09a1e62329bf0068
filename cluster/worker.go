package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/latency"
)

// Mode names returned by [Mode].
const (
	ModeStandalone = "standalone"
	ModeRR         = ipc.ModeRR
	ModeShared     = ipc.ModeShared
	ModeReusePort  = ipc.ModeReusePort
)

// ErrStandalone is returned by calls that need a supervisor when there is none.
var ErrStandalone = errors.New("cluster: not running under a supervisor")

// orphanExit is how long a worker whose supervisor vanished may drain before
// it exits on its own.
const orphanExit = 900 * time.Millisecond

// worker is this process's link to its supervisor. There is one per process,
// made on first use: the descriptors and environment it reads are
// process-wide.
//
// One goroutine, run, owns everything that changes over the worker's life:
// the listener, the drain and its progress, connections the supervisor sends
// over the control channel, and the truncation log. Frames, Listen and the
// listener's parking reach it on channels, and it never blocks on any of
// them, so a drain never stops the control channel from being read. In rr
// mode it also sheds silent connections while the worker is paused.
type worker struct {
	id, gen    int
	mode       string
	listenAddr string       // the supervisor's address (PREFORK_LISTEN_ADDR)
	ctl        *ipc.Channel // nil when standalone

	readyOnce sync.Once
	drainCh   chan struct{} // closed by run when the application should stop
	drainMS   atomic.Uint32
	watched   atomic.Bool // the application called Drain: run need not send SIGTERM

	msgs        chan []byte
	droppedMsgs atomic.Uint64 // messages lost because Messages was not read

	// Inputs of run.
	frames   chan control   // from readControl
	listens  chan listenReq // from Listen
	note     chan struct{}  // from lose and shed: something to log
	pressure chan struct{}  // from the pause gate: the worker paused

	accepted, closed, requests atomic.Uint64
	// Frames the kernel truncated, and the descriptors they lost.
	truncFrames, truncLost atomic.Uint64
	loadReports            bool
	uses                   ipc.Features // protocol features agreed with the supervisor
	check                  atomic.Pointer[func() error]
	loadKick               chan struct{}
	gate                   *pauseGate        // rr with FeaturePause: set by Listen
	silent                 silentSet         // connections that have sent nothing yet
	latency                *latency.Recorder // CountRequests' histogram, with FeatureLatency
}

// control is a frame from the supervisor as readControl hands it to run:
// its own copy of the payload, and its descriptors (conns). eof: the
// supervisor is gone.
type control struct {
	f   ipc.Frame
	fds []int
	eof bool
}

// listenReq registers a listener with run; done is closed once run has
// taken it (and stopped it, if a drain already began).
type listenReq struct {
	l    *listener
	done chan struct{}
}

// parkWait bounds how long a drain waits for Accept to hand out what already
// arrived before it tells the application.
const parkWait = time.Second

var (
	self     *worker
	selfOnce sync.Once
	selfErr  error
)

func get() (*worker, error) {
	selfOnce.Do(func() { self, selfErr = start() })
	return self, selfErr
}

func start() (*worker, error) {
	w := &worker{
		mode:     ModeStandalone,
		drainCh:  make(chan struct{}),
		msgs:     make(chan []byte, 64),
		frames:   make(chan control, 16),
		listens:  make(chan listenReq),
		note:     make(chan struct{}, 1),
		pressure: make(chan struct{}, 1),
		loadKick: make(chan struct{}, 1),
	}
	w.drainMS.Store(uint32(defaultDrain / time.Millisecond))
	if os.Getenv(ipc.EnvControlFD) == "" {
		return w, nil
	}
	// The supervisor clears close-on-exec on fds 3 and 4 for the exec that
	// started this process only; left so, every program this one starts
	// would inherit them. A child holding fd 4 in shared or reuseport mode
	// holds the port: it keeps accepting connections that nobody serves
	// after this worker stops, and the supervisor's drain never finishes.
	for _, fd := range []int{ipc.ControlFD, ipc.ListenFD} {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC) // EBADF if absent: Listen reports it
	}
	var err error
	if w.id, err = strconv.Atoi(os.Getenv(ipc.EnvWorkerID)); err != nil || w.id < 1 {
		return nil, fmt.Errorf("cluster: bad %s=%q", ipc.EnvWorkerID, os.Getenv(ipc.EnvWorkerID))
	}
	w.gen, _ = strconv.Atoi(os.Getenv(ipc.EnvGeneration))
	w.listenAddr = os.Getenv(ipc.EnvListenAddr)
	w.mode = os.Getenv(ipc.EnvMode)
	switch w.mode {
	case ModeRR, ModeShared, ModeReusePort:
	default:
		return nil, fmt.Errorf("cluster: bad %s=%q", ipc.EnvMode, w.mode)
	}
	w.ctl, err = ipc.NewChannel(os.NewFile(ipc.ControlFD, "prefork-control"))
	if err != nil {
		return nil, fmt.Errorf("cluster: control channel: %w", err)
	}
	if offered, err := strconv.ParseUint(os.Getenv(ipc.EnvFeatures), 10, 32); err == nil {
		// What the supervisor offers and this package implements; the
		// ready frame says so. An older supervisor offers nothing.
		w.uses = ipc.Features(offered) & ipc.Supported
	}
	if w.uses&ipc.FeatureLatency != 0 {
		w.latency = new(latency.Recorder)
	}
	if w.mode == ModeRR && w.uses&ipc.FeaturePause != 0 {
		w.gate = newPauseGate(w)
	}
	// Load frames cost a sendmsg per closed connection here and a wake-up
	// in the supervisor; only least-conn needs them.
	w.loadReports = os.Getenv(ipc.EnvLoadReports) == "1"
	// Children this worker may spawn must not think they are workers.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, ipc.EnvPrefix) {
			os.Unsetenv(k)
		}
	}
	go w.run()
	go w.readControl()
	go w.heartbeat()
	if w.loadReports {
		go w.reportLoad()
	}
	return w, nil
}

// readControl decodes frames from the supervisor and hands them to run,
// until the channel closes.
func (w *worker) readControl() {
	buf := make([]byte, ipc.MaxFrame)
	for {
		f, fds, err := w.ctl.Recv(buf, nil)
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			w.frames <- control{eof: true}
			return
		case errors.Is(err, ipc.ErrFDsTruncated):
			w.lose(f.Count() - len(fds)) // serve the ones that arrived
		case err != nil:
			fmt.Fprintf(os.Stderr, "cluster: control channel: %v\n", err)
			continue
		}
		f.Payload = append([]byte(nil), f.Payload...) // buf is reused
		w.frames <- control{f: f, fds: fds}
	}
}

// lose counts n connections the kernel closed before this process could
// take them (a truncated conns frame) as accepted and closed, as if served:
// the supervisor counted them as handed, and least-conn's load would drift
// otherwise.
func (w *worker) lose(n int) {
	if n <= 0 {
		return
	}
	w.accepted.Add(uint64(n))
	w.closed.Add(uint64(n))
	w.kickLoad()
	w.truncFrames.Add(1)
	w.truncLost.Add(uint64(n))
	poke(w.note)
}

// poke wakes run through ch (capacity 1) without waiting.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // run has yet to see the last one
	}
}

// shed closes up to n connections that have sent nothing for shedAfter
// before now, oldest first (see silentSet), and returns how many and when
// the oldest silent connection left was accepted.
func (w *worker) shed(n int, now time.Time) (int, time.Time) {
	k, oldest := w.silent.shed(n, now.Add(-shedAfter))
	if k > 0 {
		poke(w.note)
	}
	return k, oldest
}

// relievePause sheds silent connections while an rr worker is paused, down
// to the level at which it resumes: the closes resume it. Connections it
// takes meanwhile (frames received before the pause) may keep it paused, so
// it looks again until it resumes or sheds nothing. It returns when to try
// again (the oldest silent connection is not silent for long enough yet),
// nil when there is no need or nothing silent is left.
func (w *worker) relievePause(now time.Time) <-chan time.Time {
	g := w.gate
	for g != nil && g.paused.Load() {
		excess := g.conns() - g.low
		if excess <= 0 {
			g.update(0) // the resume could not be sent: try again
			return nil
		}
		n, oldest := w.shed(excess, now)
		if oldest.IsZero() {
			return nil
		}
		if n == 0 {
			return time.After(max(oldest.Add(shedAfter).Sub(now), time.Millisecond))
		}
	}
	return nil
}

// run is the worker's owner loop: see worker.
func (w *worker) run() {
	var (
		l        *listener
		draining bool
		told     bool // drainCh is closed
		parked   bool // l has handed out all it will
		wait     *time.Timer
		waitC    <-chan time.Time // parkWait for the drain in progress
		queue    []*handedConn    // sent on the control channel, waiting for Accept
		logs     = newWorkerLogs(slog.Default())
		logC     <-chan time.Time
		shedC    <-chan time.Time // rr: paused, with silent connections not yet old enough
	)
	tell := func() {
		if told {
			return
		}
		told, waitC = true, nil
		if wait != nil {
			wait.Stop()
		}
		close(w.drainCh)
		if !w.watched.Load() {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	}
	drain := func() {
		if draining {
			return
		}
		draining = true
		if l == nil || parked {
			tell()
			return
		}
		// Wait for Accept to hand out what already arrived (parked),
		// but not forever.
		l.stopTaking()
		wait = time.NewTimer(parkWait)
		waitC = wait.C
	}
	for {
		var extra chan<- *handedConn
		var head *handedConn
		var lparked, lclosed <-chan struct{}
		if l != nil {
			lparked, lclosed = l.parked, l.closed
			if len(queue) > 0 {
				extra, head = l.extra, queue[0]
			}
		}
		select {
		case c := <-w.frames:
			switch {
			case c.eof:
				// The supervisor is gone: drain, and exit shortly after
				// whatever the application does, so that no worker
				// outlives its supervisor.
				fmt.Fprintln(os.Stderr, "cluster: supervisor gone; exiting")
				w.drainMS.Store(uint32(orphanExit / time.Millisecond))
				drain()
				time.AfterFunc(orphanExit, func() { os.Exit(1) })
			case c.f.Type == ipc.TypeDrain:
				w.drainMS.Store(c.f.Uint32())
				drain()
			case c.f.Type == ipc.TypeConns:
				// In reuseport mode the supervisor sends connections here
				// that waited in the backlog of a slot whose worker died.
				if l == nil {
					ipc.CloseAll(c.fds)
					continue
				}
				queue = adoptAll(queue, c.fds, c.f.Peers(), l.local)
			case c.f.Type == ipc.TypeMessage:
				select {
				case w.msgs <- c.f.Payload:
				default: // nobody reads messages: drop rather than grow
					w.droppedMsgs.Add(1)
				}
			}
		case r := <-w.listens:
			l, parked = r.l, false
			if draining {
				l.stopTaking()
			}
			close(r.done)
		case extra <- head:
			queue[0] = nil
			queue = queue[1:]
			l.wake()
		case <-lparked:
			// Accept found nothing more to take (draining, or the
			// supervisor closed the handoff channel).
			parked = true
			if l.handoff != nil {
				l.handoff.Close()
			}
			if draining {
				tell()
			}
		case <-lclosed:
			for _, c := range queue {
				c.Close()
			}
			l, queue = nil, nil
			if draining {
				tell()
			}
		case <-waitC:
			tell()
		case <-w.note:
			logC = w.logCounts(logs, time.Now())
		case now := <-logC:
			logC = w.logCounts(logs, now)
		case <-w.pressure:
			shedC = w.relievePause(time.Now())
		case now := <-shedC:
			shedC = w.relievePause(now)
		}
	}
}

func (w *worker) ready() error {
	if w.ctl == nil {
		return nil
	}
	var err error
	w.readyOnce.Do(func() {
		err = w.ctl.Send(ipc.AppendReady(nil, w.uses), nil)
	})
	return err
}

// ID returns the worker's slot, 1..N, kept across respawns; 0 standalone.
func ID() int {
	w, err := get()
	if err != nil {
		return 0
	}
	return w.id
}

// Generation returns the reload generation (1 for the first workers); 0
// standalone.
func Generation() int {
	w, err := get()
	if err != nil {
		return 0
	}
	return w.gen
}

// Mode returns "rr", "shared", "reuseport", or "standalone".
func Mode() string {
	w, err := get()
	if err != nil {
		return ModeStandalone
	}
	return w.mode
}

// IsWorker reports whether the process runs under a supervisor.
func IsWorker() bool { return Mode() != ModeStandalone }

// Ready tells the supervisor that this worker serves. The first Accept on the
// listener from [Listen] calls it; call it yourself only if you serve in
// another way. Calling it more than once is harmless.
func Ready() error {
	w, err := get()
	if err != nil {
		return err
	}
	return w.ready()
}

// Drain returns a channel that is closed when the supervisor asks this worker
// to stop, or is gone. Shut down gracefully within [DrainTimeout] then.
func Drain() <-chan struct{} {
	w, err := get()
	if err != nil {
		return make(chan struct{})
	}
	w.watched.Store(true)
	return w.drainCh
}

// defaultDrain is DrainTimeout standalone and until a drain frame says
// otherwise: the supervisor's default -grace.
const defaultDrain = 30 * time.Second

// DrainTimeout is how long the supervisor waits after a drain before it
// kills the worker (its -grace); 30s standalone.
func DrainTimeout() time.Duration {
	w, err := get()
	if err != nil {
		return defaultDrain
	}
	return time.Duration(w.drainMS.Load()) * time.Millisecond
}

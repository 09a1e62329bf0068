package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// worker is this process's link to its supervisor. There is one per process,
// made on first use: the descriptors and environment it reads are
// process-wide.
//
// One goroutine, run (loop.go), owns everything that changes over the worker's life:
// the listener, the drain and its progress, connections the supervisor sends
// over the control channel, and the truncation log. Frames, Listen and the
// listener's parking reach it on channels, and it never blocks on any of
// them, so a drain never stops the control channel from being read. In rr
// mode it also sheds silent connections while the worker is paused.
type worker struct {
	id, gen    int
	mode       string
	listenAddr string       // the supervisor's address (PREFORK_LISTEN_ADDR)
	claims     claimQueue   // Claim's waits for the supervisor's answers
	proxy      *proxyConf   // -proxy-protocol in shared and reuseport: the listener reads headers
	ctl        *ipc.Channel // nil when standalone
	// listeners are the supervisor's listeners when it has several
	// (PREFORK_LISTENERS), in order; nil for one.
	listeners []ipc.ListenerInfo
	listened  atomic.Bool // Listen, or the first ListenNamed, took the listening descriptors
	demux     *demux      // ListenNamed's, once listened; guarded by demuxMu
	demuxMu   sync.Mutex

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
	gate                   *pauseGate               // rr with FeaturePause: set by Listen
	back                   *handBack                // rr with FeatureHandBack: set by Listen
	silent                 silentSet                // connections that have sent nothing yet
	latency                *latency.Recorder        // CountRequests' histogram, with FeatureLatency
	outcomes               *latency.OutcomeRecorder // status classes, with FeatureOutcomes too
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
	if v := os.Getenv(ipc.EnvListeners); v != "" {
		if err := json.Unmarshal([]byte(v), &w.listeners); err != nil {
			return nil, fmt.Errorf("cluster: bad %s=%q: %w", ipc.EnvListeners, v, err)
		}
		for i := 1; i < len(w.listeners); i++ {
			unix.FcntlInt(uintptr(ipc.ListenFD+i), unix.F_SETFD, unix.FD_CLOEXEC) // shared, reuseport: fd 4+i
		}
	}
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
		if w.uses&ipc.FeatureOutcomes != 0 {
			w.outcomes = new(latency.OutcomeRecorder)
		}
	}
	if w.mode == ModeRR && w.uses&ipc.FeaturePause != 0 {
		w.gate = newPauseGate(w)
	}
	// Load frames cost a sendmsg per closed connection here and a wake-up
	// in the supervisor; only least-conn needs them.
	w.loadReports = os.Getenv(ipc.EnvLoadReports) == "1"
	if w.proxy, err = proxyFromEnv(); err != nil {
		return nil, err
	}
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
		if f.Type == ipc.TypeClaimed {
			w.claims.answered() // here: Claim's caller may hold up the loop
			continue
		}
		f.Payload = append([]byte(nil), f.Payload...) // buf is reused
		w.frames <- control{f: f, fds: fds}
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

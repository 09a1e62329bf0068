package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/ipc"
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
type worker struct {
	id, gen    int
	mode       string
	listenAddr string       // the supervisor's address (PREFORK_LISTEN_ADDR)
	ctl        *ipc.Channel // nil when standalone

	readyOnce sync.Once
	drainOnce sync.Once
	drainCh   chan struct{}
	drainMS   atomic.Uint32
	watched   atomic.Bool // someone called Drain()

	msgs chan []byte

	accepted, closed, requests atomic.Uint64
	loadReports                bool
	uses                       ipc.Features // protocol features agreed with the supervisor
	check                      atomic.Pointer[func() error]
	loadKick                   chan struct{}

	mu       sync.Mutex
	lst      *listener // set by Listen
	draining bool      // drain began (guarded by mu, for Listen)
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
		loadKick: make(chan struct{}, 1),
	}
	w.drainMS.Store(uint32(defaultDrain / time.Millisecond))
	if os.Getenv(ipc.EnvControlFD) == "" {
		return w, nil
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
	// Load frames cost a sendmsg per closed connection here and a wake-up
	// in the supervisor; only least-conn needs them.
	w.loadReports = os.Getenv(ipc.EnvLoadReports) == "1"
	// What the supervisor offers and this package implements; the ready
	// frame says so. An older supervisor offers nothing.
	if offered, err := strconv.ParseUint(os.Getenv(ipc.EnvFeatures), 10, 32); err == nil {
		w.uses = ipc.Features(offered) & ipc.Supported
	}
	// Children this worker may spawn must not think they are workers.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, ipc.EnvPrefix) {
			os.Unsetenv(k)
		}
	}
	go w.readControl()
	go w.heartbeat()
	if w.loadReports {
		go w.reportLoad()
	}
	return w, nil
}

// readControl handles frames from the supervisor until the channel closes.
func (w *worker) readControl() {
	buf := make([]byte, ipc.MaxFrame)
	var fds []int
	for {
		var f ipc.Frame
		var err error
		f, fds, err = w.ctl.Recv(buf, fds[:0])
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			w.orphaned()
			return
		case err != nil:
			fmt.Fprintf(os.Stderr, "cluster: control channel: %v\n", err)
			continue
		}
		switch f.Type {
		case ipc.TypeDrain:
			w.drainMS.Store(f.Uint32())
			w.drain()
		case ipc.TypeConns:
			// In reuseport mode the supervisor sends connections here
			// that waited in the backlog of a slot whose worker died.
			w.mu.Lock()
			l := w.lst
			w.mu.Unlock()
			if l == nil {
				ipc.CloseAll(fds)
				continue
			}
			l.inject(fds, f.Peers())
		case ipc.TypeMessage:
			select {
			case w.msgs <- append([]byte(nil), f.Payload...):
			default: // nobody reads messages: drop rather than stall drains
			}
		}
	}
}

// orphaned runs when the supervisor is gone: drain, and exit shortly after
// whatever the application does, so that no worker outlives its supervisor.
func (w *worker) orphaned() {
	fmt.Fprintln(os.Stderr, "cluster: supervisor gone; exiting")
	w.drainMS.Store(uint32(orphanExit / time.Millisecond))
	w.drain()
	time.AfterFunc(orphanExit, func() { os.Exit(1) })
}

// drain stops taking connections, waits until every connection already
// handed to this worker has been accepted by the server, then tells the
// application (Drain) so that its Shutdown waits for all of them.
func (w *worker) drain() {
	w.drainOnce.Do(func() {
		w.mu.Lock()
		w.draining = true
		l := w.lst
		w.mu.Unlock()
		if l != nil {
			l.stopTaking()
			t := time.NewTimer(parkWait)
			select {
			case <-l.parked:
			case <-l.closed:
			case <-t.C:
			}
			t.Stop()
		}
		close(w.drainCh)
		if !w.watched.Load() {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	})
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

// Send sends an application message to the supervisor, which logs it.
func Send(msg []byte) error {
	w, err := get()
	if err != nil {
		return err
	}
	if w.ctl == nil {
		return ErrStandalone
	}
	frame, err := ipc.AppendFrame(nil, ipc.TypeMessage, msg)
	if err != nil {
		return err
	}
	return w.ctl.Send(frame, nil)
}

// Messages returns application messages from the supervisor.
func Messages() <-chan []byte {
	w, err := get()
	if err != nil {
		return nil
	}
	return w.msgs
}

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/settings"
)

// The state-machine tests run the supervisor's owner-goroutine logic on
// fake processes and a fake clock: no process is started, no time passes
// unless the test advances it, and every event is handled on the test's
// goroutine, so a freeze or a failure in the middle of a scale-up happens
// exactly when the test says.

// fakeSys is the system seam for tests.
type fakeSys struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	nextPID int
	procs   map[int]*fakeProc
	order   []*fakeProc   // in start order
	failAt  map[int]error // the nth Start (1-based) fails with this
	starts  int
	// adoptable are the pids Adopt takes over, as children kept across
	// an upgrade; any other pid is not a child (it exited and was reaped).
	adoptable map[int]bool
	// exec, if not nil, is what Exec does; else it fails.
	exec func(path string, argv, env []string) error
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newFakeSys() *fakeSys {
	return &fakeSys{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nextPID: 1000, procs: map[int]*fakeProc{}, failAt: map[int]error{}}
}

func (s *fakeSys) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *fakeSys) AfterFunc(d time.Duration, f func()) func() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &fakeTimer{at: s.now.Add(d), f: f}
	s.timers = append(s.timers, t)
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// advance moves the clock by d, firing every timer that falls due, in
// order of their due times (a timer set by another's callback fires too if
// it falls within d).
func (s *fakeSys) advance(d time.Duration) {
	s.mu.Lock()
	end := s.now.Add(d)
	s.mu.Unlock()
	for {
		s.mu.Lock()
		sort.SliceStable(s.timers, func(i, j int) bool { return s.timers[i].at.Before(s.timers[j].at) })
		var due *fakeTimer
		for i, t := range s.timers {
			if !t.at.After(end) {
				due = t
				s.timers = slices.Delete(s.timers, i, i+1)
			}
			break
		}
		if due == nil {
			s.now = end
			s.mu.Unlock()
			return
		}
		if due.at.After(s.now) {
			s.now = due.at
		}
		s.mu.Unlock()
		if !due.stopped {
			due.f()
		}
	}
}

func (s *fakeSys) Start(cmd *exec.Cmd, exited func(exitStatus)) (proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starts++
	if err := s.failAt[s.starts]; err != nil {
		return nil, err
	}
	s.nextPID++
	p := &fakeProc{pid: s.nextPID, cmd: cmd, exited: exited}
	// Keep the worker's end of the control channel, as a started worker
	// would, so that drain frames can be read back.
	if len(cmd.ExtraFiles) > 0 && cmd.ExtraFiles[0] != nil {
		f := cmd.ExtraFiles[0]
		dup, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			return nil, err
		}
		syscall.CloseOnExec(dup)
		if p.ctl, err = ipc.NewChannel(os.NewFile(uintptr(dup), "fake-ctl")); err != nil {
			return nil, err
		}
	}
	s.procs[p.pid] = p
	s.order = append(s.order, p)
	return p, nil
}

func (s *fakeSys) CPUTicks(pid int) (uint64, bool) { return 0, false }

func (s *fakeSys) Adopt(pid int, exited func(exitStatus)) (proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.adoptable[pid] {
		return nil, fmt.Errorf("adopt: pid %d is not a child of this process", pid)
	}
	p := &fakeProc{pid: pid, exited: exited}
	s.procs[pid] = p
	s.order = append(s.order, p)
	return p, nil
}

func (s *fakeSys) Exec(path string, argv []string, _ bool, env func() ([]string, error)) error {
	if s.exec != nil {
		e, err := env()
		if err != nil {
			return err
		}
		return s.exec(path, argv, e)
	}
	return errors.New("fake: exec not supported")
}

// fakeProc is a worker that never runs: the test decides what it says and
// when it exits. SIGKILL ends it at once, as it would a real process.
type fakeProc struct {
	mu      sync.Mutex
	pid     int
	cmd     *exec.Cmd
	ctl     *ipc.Channel // the worker's end of its control channel
	exited  func(exitStatus)
	signals []syscall.Signal
	gone    bool
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return os.ErrProcessDone
	}
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if sig == syscall.SIGKILL {
		p.exit(exitStatus{signal: "SIGKILL", known: true})
	}
	return nil
}

// exit ends the process with st, once.
func (p *fakeProc) exit(st exitStatus) {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return
	}
	p.gone = true
	p.mu.Unlock()
	if p.ctl != nil {
		p.ctl.Close()
	}
	p.exited(st)
}

func (p *fakeProc) got(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.signals, sig)
}

// drained reports whether the supervisor sent the worker a drain frame.
func (p *fakeProc) drained() bool {
	buf := make([]byte, ipc.MaxFrame)
	for {
		f, _, err := p.ctl.TryRecv(buf, nil)
		if err != nil {
			return false
		}
		if f.Type == ipc.TypeDrain {
			return true
		}
	}
}

func (p *fakeProc) env(key string) string {
	for _, kv := range p.cmd.Env {
		if len(kv) > len(key) && kv[:len(key)+1] == key+"=" {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// fakeMode records what the supervisor asks of its mode. Its handoff is
// real, over targets that hold no descriptor (Node's transport, never
// listening), so that routing is the handoff's own.
type fakeMode struct {
	h        *handoff.Handoff
	vacated  []int
	retired  []int
	onRetire func(sl *slot) // called as each slot is retired
	failAt   map[int]error  // slot id → prepare fails
	stopped  bool
	kept     []fdRole // what save records, as a mode's listeners
}

func newFakeMode() *fakeMode {
	h, _ := handoff.New("round-robin", zap.NewNop(), settings.DefaultQueueMax, settings.DefaultQueueTimeout)
	return &fakeMode{h: h, failAt: map[int]error{}}
}

func (m *fakeMode) listeners() []listening {
	return []listening{{name: "127.0.0.1:3000", addr: "127.0.0.1:3000"}}
}
func (m *fakeMode) startAccepting() error { return nil }
func (m *fakeMode) stopAccepting()        { m.stopped = true }
func (m *fakeMode) prepare(sl *slot, _ *ipc.Channel, _ *os.File) (handles, error) {
	if err := m.failAt[sl.id]; err != nil {
		return handles{}, err
	}
	return handles{files: []*os.File{nil}, t: handoff.NewNodeTarget(sl.id)}, nil // one listener, no socket
}
func (m *fakeMode) slot(sl *slot, c slotChange) {
	switch c {
	case slotVacant:
		m.vacated = append(m.vacated, sl.id)
	case slotRetired:
		m.retired = append(m.retired, sl.id)
		if m.onRetire != nil {
			m.onRetire(sl)
		}
	}
}
func (m *fakeMode) settle(context.Context)    {}
func (m *fakeMode) handoff() *handoff.Handoff { return m.h }
func (m *fakeMode) save(st *upgradeState) (func(), error) {
	st.FDs = append(st.FDs, m.kept...)
	return func() {}, nil
}

// routed reports whether p is in the handoff's rotation.
func (m *fakeMode) routed(p *process) bool { return m.h.Routed(p.t) }

// harness drives one supervisor on the fake system.
type harness struct {
	t    *testing.T
	s    *Supervisor
	sys  *fakeSys
	mode *fakeMode
	evs  recorder
}

// recorder keeps every event the supervisor publishes.
type recorder struct{ evs *[]control.Event }

func (r recorder) Publish(e control.Event) { *r.evs = append(*r.evs, e) }

func testConfig() Config {
	return Config{
		Listen: settings.Listeners{"127.0.0.1:0"}, Workers: 2, Mode: ipc.ModeShared, Balance: "round-robin",
		Grace: 30 * time.Second, ReadyTimeout: 30 * time.Second,
		QueueMax: settings.DefaultQueueMax, QueueTimeout: settings.DefaultQueueTimeout,
		MaxCrashes: settings.DefaultMaxCrashes, CrashWindow: settings.DefaultCrashWindow, HangTimeout: settings.DefaultHangTimeout,
		WorkerOutput: "inherit", Sched: "normal", Command: []string{"worker"},
	}
}

func newHarness(t *testing.T, edit func(*Config)) *harness {
	t.Helper()
	cfg := testConfig()
	if edit != nil {
		edit(&cfg)
	}
	h := &harness{t: t, sys: newFakeSys(), mode: newFakeMode()}
	h.s = newSupervisor(cfg, zaptest.NewLogger(t), h.sys, h.mode)
	h.evs = recorder{evs: new([]control.Event)}
	h.s.bus = h.evs
	t.Cleanup(func() {
		for _, p := range h.sys.procs {
			p.exit(exitStatus{known: true})
		}
		h.run()
		close(h.s.done)
	})
	return h
}

// run handles every event already posted or queued, on the test's
// goroutine; what the fakes do posts synchronously, so nothing is left.
func (h *harness) run() {
	h.t.Helper()
	for {
		if ev, ok := h.s.dequeue(); ok {
			h.s.handle(ev)
			continue
		}
		select {
		case ev := <-h.s.asks:
			h.s.handle(ev)
		case ev := <-h.s.events:
			h.s.handle(ev)
		default:
			return
		}
	}
}

// start starts the first workers; with ready, they all become ready.
func (h *harness) start(ready bool) {
	h.s.startWorkers()
	h.run()
	if ready {
		for _, sl := range h.s.slots {
			h.ready(sl.cur)
		}
		if h.s.phase != phaseRunning {
			h.t.Fatalf("phase %s after every worker was ready, want running", h.s.phase)
		}
	}
}

func (h *harness) fake(p *process) *fakeProc { return h.sys.procs[p.pid] }

func (h *harness) ready(p *process) {
	h.t.Helper()
	if p == nil {
		h.t.Fatal("ready: no process")
	}
	h.s.handle(evReady{p: p})
	h.run()
}

func (h *harness) exit(p *process, code int) {
	h.fake(p).exit(exitStatus{code: code, known: true})
	h.run()
}

func (h *harness) beat(p *process, hb ipc.Heartbeat) {
	hb.Healthy = true
	h.s.handle(evBeat{p: p, hb: hb})
	h.run()
}

func (h *harness) advance(d time.Duration) {
	h.sys.advance(d)
	h.run()
}

func (h *harness) tick() {
	h.s.health.onTick()
	h.run()
}

func (h *harness) signal(sig syscall.Signal) {
	h.s.onSignal(sig)
	h.run()
}

// control sends req; the reply channel is returned, answered or not yet.
func (h *harness) control(req control.Request) chan control.Response {
	reply := make(chan control.Response, 1)
	h.s.onControl(req, reply)
	h.run()
	return reply
}

// answer is the reply on ch, which must have come.
func (h *harness) answer(ch chan control.Response) control.Response {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	default:
		h.t.Fatal("no reply yet")
		return control.Response{}
	}
}

func pending(ch chan control.Response) bool { return len(ch) == 0 }

// slot returns the current worker of slot id.
func (h *harness) cur(id int) *process {
	h.t.Helper()
	for _, sl := range h.s.slots {
		if sl.id == id {
			return sl.cur
		}
	}
	h.t.Fatalf("no slot %d", id)
	return nil
}

// events returns the kinds of events published so far, with their
// "reason", "cause" or "step" when they have one.
func (h *harness) events(kind control.EventKind) []control.Event {
	var out []control.Event
	for _, e := range *h.evs.evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// forks counts fork events with cause.
func (h *harness) forks(cause control.Cause) int {
	n := 0
	for _, e := range h.events(control.EventFork) {
		if e.Cause == cause {
			n++
		}
	}
	return n
}

func (h *harness) readyCount() int {
	n := 0
	for _, p := range h.s.live {
		if p.state == control.StateReady {
			n++
		}
	}
	return n
}

// stopped reports whether every worker has exited, and the error the
// supervisor stops with (Engine.Wait's).
func (h *harness) stopped() (bool, error) { return h.s.stopped(), h.s.stopErr }

var errEMFILE = errors.New("too many open files")

// await handles events as they arrive, from the fakes or from goroutines
// such as a worker's control reader, until one matches, or fails the test
// after a deadline. It returns how many events of each type it handled.
func (h *harness) await(what string, match func(ev any) bool) map[string]int {
	h.t.Helper()
	seen := map[string]int{}
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		var ev any
		select {
		case ev = <-h.s.asks:
		case ev = <-h.s.events:
		case <-deadline.C:
			h.t.Fatalf("no %s within 5s", what)
			return nil
		}
		seen[fmt.Sprintf("%T", ev)]++
		h.s.handle(ev)
		for q, ok := h.s.dequeue(); ok; q, ok = h.s.dequeue() {
			h.s.handle(q)
		}
		if match(ev) {
			return seen
		}
	}
}

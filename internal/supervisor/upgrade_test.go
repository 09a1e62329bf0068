package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
	"github.com/prefork/prefork/internal/settings"
)

func cloexec(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

// TestStateRoundTrip: the state survives the memfd, the variable naming
// it is gone, the memfd is closed, and the kept descriptors are
// close-on-exec again (as execve left them without).
func TestStateRoundTrip(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	before := fdtest.Open(t)
	want := &upgradeState{Format: stateFormat, From: "v1", Previous: "/bin/old", Args: []string{"-workers", "2"},
		Upgrades: 2, Gen: 3, StoppedAt: time.Unix(1, 0).UTC(), Listener: -1, Control: -1, Reply: -1}
	want.Slots = []slotState{{ID: 1, Worker: workerState{PID: 42, Ctl: want.keep(int(r.Fd()), roleControl, 1), Handoff: -1, Keep: -1}}}
	mem, err := writeState(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := want.setCloexec(false); err != nil {
		t.Fatal(err)
	}
	memfd, _ := fdOf(mem)
	t.Setenv(envState, strconv.Itoa(memfd))
	// takeState closes the memfd through its own *os.File; this one must
	// not close it again.
	have, err := takeState()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv(envState); ok {
		t.Errorf("%s still set", envState)
	}
	// A pipe is not the socket a control channel is: the restore is to
	// rebuild without it, yet it is close-on-exec like every other.
	if !cloexec(t, int(r.Fd())) {
		t.Error("kept descriptor not close-on-exec after takeState")
	}
	if len(have.missing) != 1 || have.missing[0].FD != int(r.Fd()) {
		t.Errorf("missing %+v, want the pipe (descriptor %d) that is no control channel", have.missing, r.Fd())
	}
	if have.From != "v1" || have.Upgrades != 2 || have.Gen != 3 || len(have.Slots) != 1 || have.Slots[0].Worker.PID != 42 ||
		have.Slots[0].Worker.Ctl != int(r.Fd()) || !have.StoppedAt.Equal(want.StoppedAt) {
		t.Errorf("have %+v, want %+v", have, want)
	}
	if n := fdtest.Open(t); n != before {
		t.Errorf("%d descriptors open, %d before: the memfd leaked", n, before)
	}
}

func TestTakeState(t *testing.T) {
	if _, err := takeState(); err != errNoState {
		t.Fatalf("without %s: %v, want errNoState", envState, err)
	}
	for _, v := range []string{"x", "1", "-3"} {
		t.Setenv(envState, v)
		if _, err := takeState(); err == nil || !strings.Contains(err.Error(), "not a descriptor") {
			t.Errorf("%s=%s: %v", envState, v, err)
		}
	}
	mem, err := writeState(&upgradeState{Format: stateFormat + 1})
	if err != nil {
		t.Fatal(err)
	}
	fd, _ := fdOf(mem)
	t.Setenv(envState, strconv.Itoa(fd))
	if _, err := takeState(); err == nil || !strings.Contains(err.Error(), "state format") {
		t.Errorf("newer format: %v", err)
	}
}

// TestUpgradeRefusedUnlessAtRest: an upgrade needs every slot with one
// ready worker and nothing in progress.
func TestUpgradeRefusedUnlessAtRest(t *testing.T) {
	h := newHarness(t, nil)
	h.start(false)
	if err := h.s.up.canUpgrade(); err == nil || !strings.Contains(err.Error(), "not while starting") {
		t.Fatalf("while starting: %v", err)
	}
	for _, sl := range h.s.slots {
		h.ready(sl.cur)
	}
	if err := h.s.up.canUpgrade(); err != nil {
		t.Fatalf("at rest: %v", err)
	}
	h.control(control.Request{Cmd: control.CmdReload}) // answered when done
	h.run()
	if err := h.s.up.canUpgrade(); err == nil || !strings.Contains(err.Error(), "reload") {
		t.Fatalf("during a reload: %v", err)
	}
}

// TestUpgradeExecFails: when execve fails, the supervisor answers with the
// reason and every descriptor it would have kept is close-on-exec again.
func TestUpgradeExecFails(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.WorkerProtocol = ProtocolPrefork })
	h.start(true)
	answer := make(chan control.Response, 1)
	h.s.handle(evUpgrade{path: "/new/supervisor", version: "v2", answer: answer})
	h.run()
	if r := <-answer; r.OK || !strings.Contains(r.Error, "fake: exec not supported") {
		t.Fatalf("answer %+v", r)
	}
	for _, sl := range h.s.slots {
		fd, err := fdOf(sl.cur.ctl)
		if err != nil {
			t.Fatal(err)
		}
		if !cloexec(t, fd) {
			t.Errorf("slot %d's control channel left without close-on-exec", sl.id)
		}
	}
	if h.s.phase != phaseRunning {
		t.Errorf("phase %s after a failed upgrade", h.s.phase)
	}
}

// TestRRPendingAcrossUpgrade: rr's pending queue (connections accepted
// while no worker is ready) goes into the state, kept, and its accept loop
// stops; a failed upgrade puts both back. The image that restores the
// state queues them again, peers included, ahead of what it accepts.
func TestRRPendingAcrossUpgrade(t *testing.T) {
	cfg := testConfig()
	cfg.Mode = ipc.ModeRR
	ln, err := listener.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock, err := listener.Detach(ln)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newRR(cfg, zap.NewNop(), []listening{listeningOn("main", sock, false)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.startAccepting(); err != nil {
		t.Fatal(err)
	}
	defer func() { m.stopAccepting(); m.h.CloseQueue() }()
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addrOf(m), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	waitUntil(t, "two connections pending", func() bool { return m.h.Pending() == 2 })

	st := &upgradeState{}
	resume, err := m.save(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 2 || m.h.Pending() != 0 || len(st.FDs) != 3 || st.FDs[0].Role != rolePending || st.FDs[2].Role != roleListener {
		t.Fatalf("state %+v, %d still pending", st, m.h.Pending())
	}
	if st.StoppedAt.IsZero() || st.Pending[0].Peer == nil {
		t.Errorf("no stop time or peer in %+v", st)
	}
	dial() // waits in the backlog: nothing accepts
	resume()
	waitUntil(t, "the two back and the third accepted", func() bool { return m.h.Pending() == 3 })

	// What a restoring image does with the state: the same order, peers kept.
	want := m.h.TakeQueue()
	defer m.h.Requeue(want) // m closes them
	for i, p := range pendingOf(st.Pending) {
		if p.FD != want[i].FD || p.Peer != want[i].Peer {
			t.Errorf("restored %d: fd %d peer %x, want fd %d peer %x", i, p.FD, p.Peer, want[i].FD, want[i].Peer)
		}
	}
}

// adoptState is an upgrade's state with one ready worker per pid, each
// with a real control channel (the worker's end is closed at cleanup).
func adoptState(t *testing.T, pids ...int) *upgradeState {
	t.Helper()
	st := &upgradeState{Format: stateFormat, Gen: 1, Listener: -1, Control: -1, Metrics: -1, Admin: -1, Reply: -1, Binary: -1}
	for i, pid := range pids {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[1]) })
		st.Slots = append(st.Slots, slotState{ID: i + 1, Worker: workerState{PID: pid, Gen: 1,
			Ctl: st.keep(fds[0], roleControl, i+1), Handoff: -1, Keep: -1}})
	}
	return st
}

// TestAdoptGoneWorker: a worker that exited while the old image was
// re-executing itself (its waiter reaped it just before execve, and the
// exit event went with the old image) is a crash of its slot, which gets
// a new worker; the supervisor goes on with the others instead of failing.
func TestAdoptGoneWorker(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.WorkerProtocol = ProtocolPrefork })
	h.sys.adoptable = map[int]bool{501: true}
	st := adoptState(t, 501, 502)
	h.s.up.restoreState(st)
	if err := h.s.up.adopt(st); err != nil {
		t.Fatalf("adopt with one worker gone: %v", err)
	}
	h.s.up.resumed(st)
	h.run()
	if stopped, err := h.stopped(); stopped {
		t.Fatalf("supervisor stopped: %v", err)
	}
	if p := h.cur(1); p == nil || p.pid != 501 || p.state != control.StateReady {
		t.Fatalf("slot 1: %+v, want the adopted pid 501, ready", p)
	}
	p := h.cur(2)
	if p == nil || p.pid == 502 || h.forks(control.CauseCrash) != 1 {
		t.Fatalf("slot 2: %+v, %d crash forks; want a new worker in place of pid 502", p, h.forks(control.CauseCrash))
	}
	if _, ok := h.s.live[502]; ok || h.s.owned.Has(502) {
		t.Error("the gone worker is still live or owned")
	}
	if n := len(h.events(control.EventExit)); n != 1 {
		t.Errorf("%d exit events, want 1 for pid 502", n)
	}
	h.ready(p)
	if err := h.s.up.canUpgrade(); err != nil {
		t.Errorf("after the respawn: %v", err)
	}
}

// checkScript writes an executable shell script for -check-upgrade; it
// is given the path of a file to write background pids to, which the
// cleanup kills.
func checkScript(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	pids := dir + "/pids"
	t.Cleanup(func() {
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	})
	path := dir + "/supervisor"
	if err := os.WriteFile(path, []byte("#!/bin/sh\nPIDS="+pids+"\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkWithin runs checkBinary on path and fails unless it returns within d.
func checkWithin(t *testing.T, path string, d time.Duration) (string, error) {
	t.Helper()
	type result struct {
		version string
		err     error
	}
	done := make(chan result, 1)
	s := &Supervisor{log: zap.NewNop()}
	s.up.s = s
	go func() {
		v, _, err := s.up.checkBinary(path)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.version, r.err
	case <-time.After(d):
		t.Fatalf("the check of %s still running after %s", path, d)
		return "", nil
	}
}

// TestCheckLeavesAProcess: a -check-upgrade that answers and exits, but
// leaves a process holding its output open (a wrapper script starting a
// daemon, say), is done when it exits: the check does not wait for that
// process, whose output never ends.
func TestCheckLeavesAProcess(t *testing.T) {
	path := checkScript(t, "sleep 60 &\necho $! >$PIDS\necho prefork-upgrade-check version=v9 format="+strconv.Itoa(stateFormat)+"\n")
	v, err := checkWithin(t, path, checkTimeout-time.Second)
	if err != nil || v != "v9" {
		t.Fatalf("check: version %q, %v; want v9", v, err)
	}
	// Past its timeout, the check's own children holding the output
	// do not hold it up either.
	path = checkScript(t, "sleep 60 &\necho $! >$PIDS\nexec sleep 60\n")
	if _, err := checkWithin(t, path, checkTimeout+3*time.Second); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("check that never answers: %v", err)
	}
}

// TestCheckOutputBounded: a -check-upgrade that prints without end is cut
// off, not buffered whole.
func TestCheckOutputBounded(t *testing.T) {
	path := checkScript(t, "exec head -c 10000000 /dev/zero\n")
	if _, err := checkWithin(t, path, checkTimeout-time.Second); err == nil || !strings.Contains(err.Error(), "printed more than") {
		t.Fatalf("check printing 10 MB: %v", err)
	}
}

// execedState reads the state that execState handed to exec, from the
// memfd its environment names.
func execedState(t *testing.T, env []string) *upgradeState {
	t.Helper()
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, envState+"="); ok {
			b, err := os.ReadFile("/proc/self/fd/" + v)
			if err != nil {
				t.Fatal(err)
			}
			var st upgradeState
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			return &st
		}
	}
	t.Fatalf("no %s in the new image's environment", envState)
	return nil
}

// TestUpgradeKeepsSignals: a signal that arrived while the owner was
// re-executing itself goes into the state, for the new image to handle,
// instead of being lost with the old one; the new image handles it once it
// runs; and if the execve fails the old image handles it itself.
func TestUpgradeKeepsSignals(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.WorkerProtocol = ProtocolPrefork })
	h.start(true)
	sigs := make(chan os.Signal, 2)
	h.s.sigs = sigs
	sigs <- syscall.SIGHUP
	var execed *upgradeState
	h.sys.exec = func(_ string, _, env []string) error {
		execed = execedState(t, env)
		return errors.New("fake: exec failed")
	}
	answer := make(chan control.Response, 1)
	h.s.handle(evUpgrade{path: "/new/supervisor", version: "v2", answer: answer})
	if execed == nil {
		t.Fatal("the upgrade did not exec")
	}
	if !slices.Equal(execed.Signals, []int{int(syscall.SIGHUP)}) {
		t.Fatalf("state handed to the new image has signals %v, want [SIGHUP]", execed.Signals)
	}
	if h.s.reloader.roll == nil {
		t.Fatal("the SIGHUP taken for an image that did not start was not handled: no reload")
	}
	h.run()

	// The new image's side: the signals in the state are handled once it
	// runs.
	h2 := newHarness(t, func(c *Config) { c.WorkerProtocol = ProtocolPrefork })
	h2.start(true)
	h2.s.up.resumed(&upgradeState{Reply: -1, Signals: []int{int(syscall.SIGTERM)}})
	if h2.s.phase != phaseStopping {
		t.Fatalf("phase %s after a restore with a SIGTERM in the state, want stopping", h2.s.phase)
	}
}

// TestEarlySignals: in the image an upgrade starts, the supervisor's
// signals are caught from init on: until signal.Notify, Go ends a program
// on SIGHUP, and this one would take every worker with it. It runs itself
// as such an image.
func TestEarlySignals(t *testing.T) {
	if os.Getenv("PREFORK_TEST_EARLY_SIGNALS") == "1" {
		if err := unix.Kill(os.Getpid(), unix.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case sig := <-earlySigs:
			if sig != syscall.SIGHUP {
				t.Fatalf("got %v, want SIGHUP", sig)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("SIGHUP not caught within 5s")
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEarlySignals$", "-test.count=1")
	cmd.Env = append(os.Environ(), envState+"=none", "PREFORK_TEST_EARLY_SIGNALS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("an image started with %s set: %v\n%s", envState, err, out)
	}
}

// TestUpgradeKeepsTargetState: what the handoff knows of a worker from its
// frames survives the upgrade: a worker that paused (near its descriptor
// limit) stays paused, rather than being sent connections the kernel
// would close for want of room, and least-conn keeps its closed count.
func TestUpgradeKeepsTargetState(t *testing.T) {
	sl := &slot{id: 1}
	ch, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	tg, err := framesTarget(sl, ch, remote, false, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	tg = handoff.RestoreTarget(1, handoff.FramesOf(tg), handoff.TargetState{Handed: 10, Closed: 7, Paused: true})
	ctl, ctlRemote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ctlRemote.Close()
	defer ctl.Close()
	sl.cur = &process{slot: sl, ctl: ctl, t: tg}
	st := &upgradeState{}
	ss, err := saveSlot(st, sl)
	if err != nil {
		t.Fatal(err)
	}
	// The restoring image gets its own descriptors; here, duplicates.
	w := ss.Worker
	for _, fd := range []*int{&w.Ctl, &w.Handoff, &w.Keep} {
		if *fd, err = unix.FcntlInt(uintptr(*fd), unix.F_DUPFD_CLOEXEC, 3); err != nil {
			t.Fatal(err)
		}
	}
	ctl2, err := ipc.NewChannel(file(w.Ctl, "ctl"))
	if err != nil {
		t.Fatal(err)
	}
	defer ctl2.Close()
	got, err := restoreTarget(&slot{id: 1}, ctl2, w, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if got.Available() || !got.State().Paused {
		t.Error("a paused worker is available after the upgrade")
	}
	if got.Load() != 3 {
		t.Errorf("load %d after the upgrade, want 3 (10 handed, 7 closed)", got.Load())
	}
}

// TestUpgradeRefusedWithQueue: outside rr mode (reuseport hands the
// connections of a vacant slot's socket on too) the state has no place
// for the handoff's pending queue, and execve would close those
// connections: the upgrade waits until the queue is empty.
func TestUpgradeRefusedWithQueue(t *testing.T) {
	cfg := testConfig()
	cfg.Listen, cfg.Workers, cfg.Mode = settings.Listeners{"127.0.0.1:0"}, 1, ipc.ModeReusePort
	m, err := newReusePort(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.stopAccepting()
	defer m.h.CloseQueue()
	// No worker is routed: what the vacant slot's socket gets waits.
	m.slot(&slot{id: 1}, slotVacant)
	c, err := net.DialTimeout("tcp", addrOf(m), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, "the connection queued", func() bool { return m.h.Pending() == 1 })
	m.slot(&slot{id: 1}, slotFilled)
	if _, err := m.save(&upgradeState{}); err == nil || !strings.Contains(err.Error(), "wait for a worker") {
		t.Fatalf("with a connection queued: %v", err)
	}
	m.h.CloseQueue()
	if _, err := m.save(&upgradeState{}); err != nil {
		t.Fatalf("with the queue empty: %v", err)
	}
}

// TestOneUpgradeAtATime: while an upgrade is being checked or carried out,
// another request (a second ctl upgrade, SIGUSR2 sent twice) is refused at
// once: its check would be a child forked while the first upgrade has
// cleared close-on-exec on every descriptor it keeps, and would hold them.
func TestOneUpgradeAtATime(t *testing.T) {
	upgradable.Store(true)
	t.Cleanup(func() { upgradable.Store(false) })
	h := newHarness(t, nil)
	path := checkScript(t, "echo prefork-upgrade-check version=v9 format="+strconv.Itoa(stateFormat)+"\n")
	first := make(chan control.Response, 1)
	go func() { first <- h.s.up.requestUpgrade(context.Background(), path, false) }()
	var ev evUpgrade
	select {
	case e := <-h.s.asks: // not handled until the second is answered
		ev = e.(evUpgrade)
	case <-time.After(checkTimeout + time.Second):
		t.Fatal("the first upgrade did not reach the owner")
	}
	defer func() {
		respond(ev.answer, control.Response{Error: "test: done"})
		<-first
	}()
	second := make(chan control.Response, 1)
	go func() { second <- h.s.up.requestUpgrade(context.Background(), path, false) }()
	select {
	case r := <-second:
		if r.OK || !strings.Contains(r.Error, "in progress") {
			t.Fatalf("second upgrade: %+v", r)
		}
	case <-time.After(checkTimeout):
		t.Fatal("the second upgrade was not refused while the first one runs")
	}
}

// A worker's counts survive an upgrade as both an older and a newer
// supervisor read them: Handed is its share (what an older one restores
// as the load), and Returned restores the handoffs counter whole.
func TestTargetCountsAcrossUpgrade(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := restoreTarget(&slot{id: 1}, nil, workerState{Handoff: fds[0], Keep: fds[1], Handed: 7, Returned: 3}, zap.NewNop())
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		t.Fatal(err)
	}
	defer tg.Close()
	if st := tg.State(); tg.Handed() != 10 || st.Returned != 3 || tg.Load() != 7 {
		t.Fatalf("restored handed %d, returned %d, load %d; want 10, 3 and 7", tg.Handed(), st.Returned, tg.Load())
	}
}

// TestUsr2DuringUpgradeDecidedOnOwner: a SIGUSR2 that reaches the owner
// while an upgrade is in progress is coalesced by the owner itself, before
// onSignal returns: the owner may execve next, and a goroutine started
// for the request would end with the old image, neither made nor
// coalesced. With one P, a goroutine cannot have run by then.
func TestUsr2DuringUpgradeDecidedOnOwner(t *testing.T) {
	upgradable.Store(true)
	t.Cleanup(func() { upgradable.Store(false) })
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := newHarness(t, nil)
	core, logs := zapobserver.New(zap.InfoLevel)
	h.s.log = zap.New(core)
	h.s.up.upgrading.Store(true) // checked or rehearsed, about to execve
	h.s.onSignal(syscall.SIGUSR2)
	if n := logs.FilterMessage("upgrade coalesced with the one in progress").Len(); n != 1 {
		t.Fatalf("when onSignal returned, %d requests were coalesced, want 1: %v", n, logs.All())
	}
	if !h.s.up.upgrading.Load() {
		t.Fatal("the upgrade in progress lost its flag")
	}
}

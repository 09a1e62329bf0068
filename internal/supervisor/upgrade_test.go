package supervisor

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
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
	if !cloexec(t, int(r.Fd())) {
		t.Error("kept descriptor not close-on-exec after takeState")
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
	if err := h.s.canUpgrade(); err == nil || !strings.Contains(err.Error(), "not while starting") {
		t.Fatalf("while starting: %v", err)
	}
	for _, sl := range h.s.slots {
		h.ready(sl.cur)
	}
	if err := h.s.canUpgrade(); err != nil {
		t.Fatalf("at rest: %v", err)
	}
	h.control(control.Request{Cmd: control.CmdReload}) // answered when done
	h.run()
	if err := h.s.canUpgrade(); err == nil || !strings.Contains(err.Error(), "reload") {
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
	m := newRR(cfg, zap.NewNop(), sock, false)
	if err := m.startAccepting(); err != nil {
		t.Fatal(err)
	}
	defer func() { m.stopAccepting(); m.close() }()
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", m.addr(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	until(t, 2*time.Second, "two connections pending", func() bool { return m.h.npend.Load() == 2 })

	st := &upgradeState{}
	resume := m.pauseAccepting(st)
	if len(st.Pending) != 2 || m.h.npend.Load() != 0 || len(st.FDs) != 2 || st.FDs[0].Role != rolePending {
		t.Fatalf("state %+v, %d still pending", st, m.h.npend.Load())
	}
	if st.StoppedAt.IsZero() || st.Pending[0].Peer == nil {
		t.Errorf("no stop time or peer in %+v", st)
	}
	dial() // waits in the backlog: nothing accepts
	resume()
	until(t, 2*time.Second, "the two back and the third accepted", func() bool { return m.h.npend.Load() == 3 })

	// What a restoring image does with the state: the same order, peers kept.
	h, _ := newTestHandoff(DefaultQueueMax, time.Minute)
	h.restorePending(st.Pending)
	m.h.mu.Lock()
	want := m.h.pending[:2]
	m.h.mu.Unlock()
	for i, p := range h.pending {
		if p.fd != want[i].fd || p.peer != want[i].peer {
			t.Errorf("restored %d: fd %d peer %x, want fd %d peer %x", i, p.fd, p.peer, want[i].fd, want[i].peer)
		}
	}
	h.pending = nil // the same descriptors as m's: m closes them
}

// A worker's counts survive an upgrade as both an older and a newer
// supervisor read them: Handed is its share (what an older one restores
// as the load), and Returned restores the handoffs counter whole.
func TestTargetCountsAcrossUpgrade(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := restoreTarget(&slot{id: 1}, nil, workerState{Handoff: fds[0], Keep: fds[1], Handed: 7, Returned: 3})
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		t.Fatal(err)
	}
	defer tg.ch.Close()
	defer tg.keep.Close()
	if tg.handed.Load() != 10 || tg.returned.Load() != 3 || tg.Load() != 7 {
		t.Fatalf("restored handed %d, returned %d, load %d; want 10, 3 and 7", tg.handed.Load(), tg.returned.Load(), tg.Load())
	}
}

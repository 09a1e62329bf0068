package supervisor

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
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

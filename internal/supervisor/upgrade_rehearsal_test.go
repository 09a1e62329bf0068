package supervisor

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
)

// fakeRehearsal stands in for the new binary's rehearsal: the test ends
// it when it likes, with done.
type fakeRehearsal struct {
	st      *upgradeState // the snapshot it was given
	done    func(error)
	stopped bool
}

// readyToUpgrade is a harness whose workers are all ready and speak the
// prefork protocol, as an upgrade needs.
func readyToUpgrade(t *testing.T) *harness {
	h := newHarness(t, func(c *Config) { c.WorkerProtocol = ProtocolPrefork })
	h.start(true)
	return h
}

// rehearsing sets h up for an upgrade whose rehearsal is a fake and whose
// execve fails, recording the state it was given; it asks for the
// upgrade and returns the rehearsal, started, and the answer channel.
func (h *harness) rehearsing() (*fakeRehearsal, *upgradeState, chan control.Response) {
	h.t.Helper()
	fr := &fakeRehearsal{}
	h.s.up.rehearse = func(st *upgradeState, _ string, done func(error)) (func(), error) {
		fr.st, fr.done = st, done
		return func() { fr.stopped = true }, nil
	}
	execed := &upgradeState{}
	h.sys.exec = func(_ string, _, env []string) error {
		*execed = *execedState(h.t, env)
		return errors.New("fake: exec failed")
	}
	answer := make(chan control.Response, 1)
	h.s.handle(evUpgrade{path: "/new/supervisor", version: "v2", answer: answer})
	h.run()
	if fr.st == nil || h.s.up.rehearsal == nil {
		h.t.Fatal("the upgrade did not start a rehearsal")
	}
	return fr, execed, answer
}

// end ends the rehearsal with err, as its waiter does, and handles that.
func (h *harness) end(fr *fakeRehearsal, err error) {
	fr.done(err)
	h.run()
}

// TestRehearsalBesideOwner: while the new binary rehearses, the owner
// serves on (status, a worker's death and its replacement) and refuses a
// second upgrade; when the rehearsal passes, the execve uses the state as
// it is then, not the rehearsal's snapshot.
func TestRehearsalBesideOwner(t *testing.T) {
	h := readyToUpgrade(t)
	fr, execed, answer := h.rehearsing()
	if execed.Format != 0 || !pending(answer) {
		t.Fatalf("execed %+v or answered %v before the rehearsal ended", execed, answer)
	}
	if r := h.answer(h.control(control.Request{Cmd: control.CmdStatus})); !r.OK {
		t.Fatalf("status during the rehearsal: %+v", r)
	}
	second := make(chan control.Response, 1)
	h.s.handle(evUpgrade{path: "/other/supervisor", version: "v3", answer: second})
	if r := h.answer(second); r.OK || !strings.Contains(r.Error, "another upgrade") {
		t.Fatalf("a second upgrade during the rehearsal: %+v", r)
	}
	old := h.cur(1)
	h.exit(old, 1)
	p := h.cur(1)
	if p == nil || p == old {
		t.Fatal("slot 1 not respawned during the rehearsal")
	}
	h.ready(p)

	h.end(fr, nil)
	if execed.Format == 0 {
		t.Fatal("the rehearsal passed and nothing was executed")
	}
	if got := fr.st.Slots[0].Worker.PID; got != old.pid {
		t.Errorf("the rehearsal's snapshot has slot 1's pid %d, want %d", got, old.pid)
	}
	if got := execed.Slots[0].Worker.PID; got != p.pid {
		t.Errorf("the execve's state has slot 1's pid %d, want the replacement's %d", got, p.pid)
	}
	if r := h.answer(answer); r.OK || !strings.Contains(r.Error, "fake: exec failed") {
		t.Fatalf("answer %+v", r)
	}
	if h.s.up.rehearsal != nil || h.s.phase != phaseRunning {
		t.Errorf("after the failed execve: rehearsal %v, phase %s", h.s.up.rehearsal, h.s.phase)
	}
}

// TestRehearsalStopWins: SIGTERM during the rehearsal kills it; the
// supervisor's loop goes on until the rehearsal's end has arrived, and
// that end, even a pass, does not exec.
func TestRehearsalStopWins(t *testing.T) {
	h := readyToUpgrade(t)
	fr, execed, answer := h.rehearsing()
	h.signal(syscall.SIGTERM)
	if !fr.stopped {
		t.Fatal("the rehearsal was not stopped by SIGTERM")
	}
	for _, p := range h.s.live {
		h.exit(p, 0)
	}
	if h.s.stopped() {
		t.Fatal("stopped before the rehearsal's end arrived")
	}
	h.end(fr, nil) // it passed just before its kill
	if execed.Format != 0 {
		t.Fatal("executed the new binary while stopping")
	}
	if r := h.answer(answer); r.OK || !strings.Contains(r.Error, "stopping") {
		t.Fatalf("answer %+v, want refused: stopping", r)
	}
	if !h.s.stopped() {
		t.Fatal("not stopped once every worker and the rehearsal have ended")
	}
}

// TestRehearsalThenChanged: what begins or changes during the rehearsal
// refuses the upgrade at its end, saying so: a reload; the listeners
// (reuseport's sockets after a scale, say).
func TestRehearsalThenChanged(t *testing.T) {
	t.Run("reload", func(t *testing.T) {
		h := readyToUpgrade(t)
		fr, execed, answer := h.rehearsing()
		h.control(control.Request{Cmd: control.CmdReload})
		h.end(fr, nil)
		if r := h.answer(answer); r.OK || !strings.Contains(r.Error, "not during a reload (it changed during the rehearsal)") {
			t.Fatalf("answer %+v", r)
		}
		if execed.Format != 0 {
			t.Fatal("executed during a reload")
		}
	})
	t.Run("listeners", func(t *testing.T) {
		h := readyToUpgrade(t)
		h.mode.kept = []fdRole{{FD: 100, Role: rolePort, Name: mainListener, Slot: 1}}
		fr, execed, answer := h.rehearsing()
		h.mode.kept = append(h.mode.kept, fdRole{FD: 101, Role: rolePort, Name: mainListener, Slot: 3})
		h.end(fr, nil)
		if r := h.answer(answer); r.OK || !strings.Contains(r.Error, "listeners changed during the rehearsal") || !strings.Contains(r.Error, "of slot 3") {
			t.Fatalf("answer %+v", r)
		}
		if execed.Format != 0 {
			t.Fatal("executed with other listeners than rehearsed")
		}
	})
	t.Run("failed", func(t *testing.T) {
		h := readyToUpgrade(t)
		fr, execed, answer := h.rehearsing()
		h.end(fr, errors.New("upgrade: rehearsal of /new/supervisor: no answer within 5s"))
		if r := h.answer(answer); r.OK || !strings.Contains(r.Error, "no answer within") {
			t.Fatalf("answer %+v", r)
		}
		if execed.Format != 0 || h.s.up.rehearsal != nil {
			t.Fatal("executed after a failed rehearsal, or still rehearsing")
		}
	})
}

// TestRehearsalChildStopped: the real rehearsal, of a release that
// hangs in it, returns at once, and stopping it kills and reaps it (its
// whole process group) within a second, its end saying why.
func TestRehearsalChildStopped(t *testing.T) {
	h := newHarness(t, nil)
	path := checkScript(t, "echo $$ >$PIDS\nexec sleep 60\n")
	ended := make(chan error, 1)
	t0 := time.Now()
	stop, err := h.s.up.rehearseChild(&upgradeState{Format: stateFormat}, path, func(err error) { ended <- err })
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > time.Second {
		t.Errorf("starting the rehearsal took %v", took)
	}
	pids := strings.TrimSuffix(path, "supervisor") + "pids"
	var pid int
	for deadline := time.Now().Add(5 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(pids)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if pid == 0 {
		t.Fatal("the rehearsal did not start")
	}
	select {
	case err := <-ended:
		t.Fatalf("the hanging rehearsal ended by itself: %v", err)
	default:
	}
	stop()
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "stopping") {
			t.Errorf("end of a stopped rehearsal: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the stopped rehearsal did not end within 2s")
	}
	if _, err := procfs.ReadStat(pid); err == nil {
		t.Errorf("the rehearsal (pid %d) is still there: not killed or not reaped", pid)
	}
	if h.s.owned.Has(pid) {
		t.Errorf("pid %d still recorded as owned", pid)
	}
}

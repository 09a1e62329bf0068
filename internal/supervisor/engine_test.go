package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/reaper"
)

// viaEngine runs call, an Engine method, on another goroutine as a program
// would, handles on the test's goroutine the event it posts, and returns
// its result.
func viaEngine[T any](h *harness, call func(e *Engine) T) T {
	h.t.Helper()
	got := make(chan T, 1)
	go func() { got <- call(&Engine{s: h.s}) }()
	h.await("the engine's call", func(ev any) bool { _, ok := ev.(evCall); return ok })
	h.run()
	select {
	case r := <-got:
		return r
	case <-time.After(5 * time.Second):
		h.t.Fatal("the engine's call did not return")
		panic("unreachable")
	}
}

// Fork adds a slot whose workers, the first and its replacements, get the
// environment given; a PREFORK_ variable is refused before anything runs.
func TestEngineFork(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	type result struct {
		id  int
		err error
	}
	got := make(chan result, 1)
	go func() {
		id, _, err := (&Engine{s: h.s}).Fork(context.Background(), []string{"COLOR=blue"})
		got <- result{id, err}
	}()
	h.await("the fork", func(ev any) bool { _, ok := ev.(evCall); return ok })
	h.run()
	p := h.cur(3)
	if p == nil || h.fake(p).env("COLOR") != "blue" || h.fake(p).env(ipc.EnvWorkerID) != "3" {
		t.Fatalf("slot 3's worker has not COLOR=blue and %s=3", ipc.EnvWorkerID)
	}
	if h.fake(h.cur(1)).env("COLOR") != "" {
		t.Fatal("slot 1's worker got the forked slot's environment")
	}
	h.ready(p)
	if r := <-got; r.err != nil || r.id != 3 {
		t.Fatalf("Fork = %d, %v; want 3, nil", r.id, r.err)
	}
	h.exit(p, 1)
	if q := h.cur(3); q == nil || q == p || h.fake(q).env("COLOR") != "blue" {
		t.Fatal("slot 3 after a crash: want a new worker with COLOR=blue")
	}

	if _, _, err := (&Engine{s: h.s}).Fork(context.Background(), []string{ipc.EnvWorkerID + "=9"}); err == nil {
		t.Fatal("Fork with a PREFORK_ variable: no error")
	}
	if _, _, err := (&Engine{s: h.s}).Fork(context.Background(), []string{"NOEQUALS"}); err == nil {
		t.Fatal("Fork with an entry that is not KEY=VALUE: no error")
	}
}

// Send puts a message frame on the worker's control channel; a worker
// that does not read makes it wait for room off the owner goroutine, and
// fail with ErrBusy when its context ends; an exited worker is
// ErrNoWorker.
func TestEngineSend(t *testing.T) {
	h := newHarness(t, withProtocol(ProtocolPrefork))
	h.start(true)
	p := h.cur(1)
	if err := viaEngine(h, func(e *Engine) error { return e.Send(context.Background(), p.pid, []byte("hello")) }); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ipc.MaxFrame)
	f, _, err := h.fake(p).ctl.TryRecv(buf, nil)
	if err != nil || f.Type != ipc.TypeMessage || string(f.Payload) != "hello" {
		t.Fatalf("worker got %v %q, %v; want a message frame hello", f.Type, f.Payload, err)
	}

	// Fill the channel, without a round trip per send.
	frame, _ := ipc.AppendFrame(nil, ipc.TypeMessage, make([]byte, 1024))
	for i := 0; i < 1<<20; i++ {
		if p.ctl.Send(frame, nil) != nil {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	full := viaEngine(h, func(e *Engine) error { return e.Send(ctx, p.pid, []byte("more")) })
	if !errors.Is(full, ErrBusy) || !errors.Is(full, context.DeadlineExceeded) {
		t.Fatalf("sending to a worker that does not read: %v, want ErrBusy after the deadline", full)
	}
	// Room made by the worker lets a waiting Send through.
	got := make(chan string, 1)
	go func() { // the worker, reading late
		rbuf := make([]byte, ipc.MaxFrame)
		time.Sleep(200 * time.Millisecond) // not synchronisation: Send must wait, however long
		for {
			f, _, err := h.fake(p).ctl.Recv(rbuf, nil)
			if err != nil || string(f.Payload) == "last" {
				got <- fmt.Sprint(string(f.Payload), err)
				return
			}
		}
	}()
	if err := viaEngine(h, func(e *Engine) error { return e.Send(context.Background(), p.pid, []byte("last")) }); err != nil {
		t.Fatalf("Send to a worker that reads late: %v", err)
	}
	if m := <-got; m != "last<nil>" {
		t.Fatalf("worker got %q, want last", m)
	}

	pid := p.pid
	h.exit(p, 0)
	err = viaEngine(h, func(e *Engine) error { return e.Send(context.Background(), pid, []byte("x")) })
	if !errors.Is(err, ErrNoWorker) {
		t.Fatalf("Send to an exited worker: %v, want ErrNoWorker", err)
	}
}

// A node worker's process.on('message') gets the JSON value sent, or the
// bytes as a JSON string when they are not JSON.
func TestEngineSendNode(t *testing.T) {
	h := newHarness(t, withProtocol(ProtocolNode))
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, _, peer, _ := startNodeLink(t, h, ln, false)
	defer l.close()
	for _, c := range []struct{ send, want string }{
		{`{"total":3}`, `{"total":3}`},
		{`plain text`, `"plain text"`},
	} {
		if err := l.send(context.Background(), []byte(c.send)); err != nil {
			t.Fatal(err)
		}
		if m := peer.recv(); string(m.Body) != c.want {
			t.Fatalf("sent %q, worker got %s, want %s", c.send, m.Body, c.want)
		}
	}
}

// Disconnect drains the worker, its slot gets a new one at once, and its
// exit is no crash; nor is Kill's, even by SIGKILL: the slot respawns at
// once, and the crash budget is untouched.
func TestEngineDisconnectAndKill(t *testing.T) {
	h := newHarness(t, withProtocol(ProtocolPrefork))
	h.start(true)
	p := h.cur(1)
	if err := viaEngine(h, func(e *Engine) error { return e.Disconnect(context.Background(), p.pid) }); err != nil {
		t.Fatal(err)
	}
	if !p.asked || p.reason != control.CauseDisconnect || !h.fake(p).drained() {
		t.Fatalf("asked %v reason %q drained %v; want a drain labelled disconnect", p.asked, p.reason, h.fake(p).drained())
	}
	if q := h.cur(1); q == nil || q == p {
		t.Fatal("slot 1 has no new worker after a disconnect")
	}
	h.exit(p, 0)
	if n := h.s.counts.exits[control.CauseCrash]; n != 0 {
		t.Fatalf("%d crashes counted after a disconnect, want none", n)
	}

	q := h.cur(2)
	if err := viaEngine(h, func(e *Engine) error { return e.Kill(context.Background(), q.pid, syscall.SIGKILL) }); err != nil {
		t.Fatal(err)
	}
	h.run()
	switch {
	case h.forks(control.CauseCrash) != 0 || h.s.counts.exits[control.CauseCrash] != 0:
		t.Fatalf("a Kill counted as a crash: %d respawns, %d exits", h.forks(control.CauseCrash), h.s.counts.exits[control.CauseCrash])
	case h.forks(control.CauseKill) != 1 || h.s.counts.exits[control.CauseKill] != 1:
		t.Fatalf("%d kill respawns and %d kill exits, want 1 each", h.forks(control.CauseKill), h.s.counts.exits[control.CauseKill])
	case len(q.slot.budget.crashes) != 0:
		t.Fatalf("the crash budget holds %d crashes after a Kill", len(q.slot.budget.crashes))
	case h.cur(2) == nil || h.cur(2) == q:
		t.Fatal("slot 2 has no new worker after a Kill")
	}
}

// The reaper leaves alone a child the primary's own code started (in the
// primary's process group), whose Wait must get its status, and reaps one
// in a process group of its own, as an orphaned grandchild of a worker is.
func TestReaperSparesOwnChildren(t *testing.T) {
	h := newHarness(t, nil)
	own := exec.Command("true")
	orphan := exec.Command("true")
	orphan.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, c := range []*exec.Cmd{own, orphan} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// Both exit at once; wait until both are zombies.
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range []*exec.Cmd{own, orphan} {
		for {
			st, err := procfs.ReadStat(c.Process.Pid)
			if err == nil && st.State == 'Z' {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d not a zombie within 5s", c.Process.Pid)
			}
			time.Sleep(time.Millisecond)
		}
	}
	reaped := reaper.Reap(h.s.notOrphan)
	if !slices.Contains(reaped, orphan.Process.Pid) || slices.Contains(reaped, own.Process.Pid) {
		t.Fatalf("reaped %v; want %d (own group) spared and %d reaped", reaped, own.Process.Pid, orphan.Process.Pid)
	}
	if err := own.Wait(); err != nil {
		t.Fatalf("Wait of the primary's own child: %v", err)
	}
}

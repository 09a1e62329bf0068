package supervisor

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/ipc"
)

// A worker that sends descriptors on its control channel must not leave
// them open in the supervisor: 20 frames of 64 used to leave 1,280.
func TestControlChannelDescriptorsAreClosed(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	p := h.cur(1)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	fds := make([]int, ipc.MaxFDs)
	for i := range fds {
		fds[i] = int(devnull.Fd())
	}
	before := fdtest.Open(t)
	for range 20 {
		if err := h.fake(p).ctl.Send(ipc.ConnsFrame(len(fds)), fds); err != nil {
			t.Fatal(err)
		}
	}
	// The reader reports protocol errors at powers of two: the 16th is
	// the last one reported, after which it has read 20 frames once a
	// heartbeat sent behind them arrives.
	hb := ipc.AppendHeartbeat(nil, ipc.Heartbeat{Healthy: true})
	if err := h.fake(p).ctl.Send(hb, nil); err != nil {
		t.Fatal(err)
	}
	seen := h.await("heartbeat", func(ev any) bool { _, ok := ev.(evBeat); return ok })
	if after := fdtest.Open(t); after > before {
		t.Errorf("the supervisor holds %d more descriptors after 20 frames of %d", after-before, len(fds))
	}
	if seen["supervisor.evProtocol"] != 5 || h.s.counts.protocol != 5 {
		t.Errorf("protocol events %d, counted %d; want 5 (at 1, 2, 4, 8 and 16 errors)", seen["supervisor.evProtocol"], h.s.counts.protocol)
	}
	if h.fake(p).got(syscall.SIGKILL) {
		t.Error("replaced below the protocol-error limit")
	}
}

// A worker that keeps breaking the protocol is replaced, through the crash
// budget, and its reader stops reading it.
func TestProtocolBreakerIsReplaced(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	p := h.cur(1)
	for range maxProtocolErrors {
		if err := h.fake(p).ctl.Send([]byte{9, 9, 9}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h.await("the protocol-error limit", func(ev any) bool { e, ok := ev.(evProtocol); return ok && e.count == maxProtocolErrors })
	h.run() // the kill's exit, and the respawn
	if !h.fake(p).got(syscall.SIGKILL) {
		t.Fatal("the worker was not replaced")
	}
	if h.cur(1) == nil || h.cur(1) == p || h.s.counts.exits[control.CauseProtocol] != 1 || h.forks(control.CauseProtocol) != 1 {
		t.Fatalf("slot 1 not refilled: exits %v", h.s.counts.exits)
	}
}

// A rollout's new worker that breaks the protocol before it is ready is
// replaced; the rollout must fail rather than wait for it for ever.
func TestProtocolBreakerDuringReloadEndsIt(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	reply := h.control(control.Request{Cmd: control.CmdReload})
	next := h.s.reloader.roll.next
	h.s.handle(evProtocol{p: next, err: errors.New("bad frame"), count: maxProtocolErrors})
	h.run()
	if !h.fake(next).got(syscall.SIGKILL) {
		t.Fatal("the protocol breaker was not killed")
	}
	if pending(reply) || h.s.reloader.roll != nil {
		t.Fatal("the reload still waits for a worker that was killed")
	}
	if r := h.answer(reply); r.OK {
		t.Fatalf("reply %+v, want a failure", r)
	}
	if h.readyCount() != 2 {
		t.Fatalf("%d ready, want the old workers", h.readyCount())
	}
}

// A message flood reaches the owner goroutine no faster than it takes
// the messages, and whole: the reader stops reading (the worker's Send
// waits) rather than drop any.
func TestMessageFloodIsDelivered(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	p := h.cur(1)
	msg, err := ipc.AppendFrame(nil, ipc.TypeMessage, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for range 2000 {
		if h.fake(p).ctl.Send(msg, nil) != nil {
			break // the queue is full; what is queued is enough
		}
		sent++
	}
	// A heartbeat behind the messages says when the reader has read them
	// all; until it fits in the queue, take what the reader passes on.
	passed := 0
	count := func(seen map[string]int) { passed += seen["supervisor.evMessage"] }
	deadline := time.Now().Add(5 * time.Second)
	for h.fake(p).ctl.Send(ipc.AppendHeartbeat(nil, ipc.Heartbeat{Healthy: true}), nil) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the worker's control channel stayed full for 5s")
		}
		select { // poll: the reader posts the messages first
		case ev := <-h.s.events:
			if _, ok := ev.(evMessage); ok {
				passed++
			}
			h.s.handle(ev)
		case <-time.After(time.Millisecond):
		}
	}
	count(h.await("heartbeat", func(ev any) bool { _, ok := ev.(evBeat); return ok }))
	if passed != sent {
		t.Errorf("%d of %d messages passed; want all", passed, sent)
	}
}

// A worker whose health check keeps failing is logged when it turns
// unhealthy and when it recovers, not at every heartbeat.
func TestUnhealthyLoggedOnChange(t *testing.T) {
	h := newHarness(t, nil)
	core, logs := zapobserver.New(zap.WarnLevel)
	h.s.log = zap.New(core)
	h.start(true)
	p := h.cur(1)
	for range 10 {
		h.s.handle(evBeat{p: p, hb: ipc.Heartbeat{Healthy: false}})
	}
	h.beat(p, ipc.Heartbeat{})
	for range 10 {
		h.s.handle(evBeat{p: p, hb: ipc.Heartbeat{Healthy: false}})
	}
	if n := logs.FilterMessage("worker reports unhealthy").Len(); n != 2 {
		t.Fatalf("%d unhealthy lines for 20 unhealthy beats in two runs, want 2", n)
	}
}

// A worker that exits leaving unread what the supervisor sent it is gone,
// not a worker that broke the protocol: read after its exit (TryRecv), the
// channel says "connection reset by peer", which was logged as a protocol
// error.
func TestResetAfterExitIsGone(t *testing.T) {
	local, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	msg, _ := ipc.AppendFrame(nil, ipc.TypeMessage, []byte("unread"))
	if err := local.Send(msg, nil); err != nil {
		t.Fatal(err)
	}
	remote.Close() // the worker exits
	_, _, err = local.TryRecv(make([]byte, ipc.MaxFrame), nil)
	if err == nil || !gone(err) {
		t.Fatalf("TryRecv after the worker's exit: %v; gone %v, want true", err, gone(err))
	}
}

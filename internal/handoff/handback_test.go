package handoff

import (
	"testing"
	"time"

	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/ipc"
)

// handBack sends fds from a worker's end, as a draining worker hands its
// connections back, and closes them there.
func handBack(t *testing.T, w *ipc.Channel, fds []int) {
	t.Helper()
	err := w.Send(ipc.ConnsFrame(len(fds)), fds)
	ipc.CloseAll(fds)
	if err != nil {
		t.Fatal(err)
	}
}

// Connections a draining worker hands back go to another worker; those it
// handed back just before it exited are placed too, not lost with its
// channel.
func TestHandBackPlacesOnAnotherWorker(t *testing.T) {
	h, a, b, wa, wb := twoWorkers(t, false)
	h.Receive(a)
	h.Unroute(a) // draining
	handBack(t, wa, pipeFDs(t, 3))
	got := 0
	until(t, 5*time.Second, "3 connections reach the other worker", func() bool {
		got += received(t, wb)
		return got == 3
	})
	handBack(t, wa, pipeFDs(t, 2))
	h.Recover(a) // exited: what it sent last is read before its channel closes
	if have := received(t, wb); have != 2 {
		t.Fatalf("after the exit: %d of 2 handed back reached the other worker", have)
	}
	if st := h.Stats(); st.HandedBack != 5 || st.Unplaced != 0 {
		t.Fatalf("stats %+v, want 5 handed back, 0 unplaced", st)
	}
	if b.Handed() != 5 {
		t.Fatalf("the other worker was handed %d, want 5", b.Handed())
	}
}

// A connection handed back while no other worker can take it waits in the
// queue; one the queue cannot hold is closed and counted, never leaked.
func TestHandBackUnplacedIsClosed(t *testing.T) {
	h, a, b, wa, wb := twoWorkers(t, false)
	h.queueMax = 1
	h.Receive(a)
	h.Unroute(a)
	h.Unroute(b)
	before := fdtest.Open(t)
	handBack(t, wa, pipeFDs(t, 2))
	h.Recover(a)
	if st := h.Stats(); st.HandedBack != 2 || st.Unplaced != 1 || st.Pending != 1 {
		t.Fatalf("stats %+v, want 2 handed back, 1 unplaced, 1 pending", st)
	}
	// Recover closed a's channel and its kept end; one connection waits.
	if want, have := before-2+1, fdtest.Open(t); want != have {
		t.Fatalf("descriptors open: want %d, have %d", want, have)
	}
	h.Route(b)
	if have := received(t, wb); have != 1 {
		t.Fatalf("the queued one: %d reached the worker that became ready", have)
	}
}

// Connections handed back to rebalance go to the workers under their
// share, the one missing the most first, not round the policy (which would
// return half of them to the busy ones); past the wants, the policy picks.
func TestHandBackGoesWhereWanted(t *testing.T) {
	h, a, b, wa, wb := twoWorkers(t, false)
	c, wc := testTarget(t, 3)
	h.Route(c)
	h.Receive(a)
	h.Want(map[*Target]int{b: 1, c: 3})
	for range 4 {
		handBack(t, wa, pipeFDs(t, 1))
	}
	gotB, gotC := 0, 0
	until(t, 5*time.Second, "4 connections placed", func() bool {
		gotB += received(t, wb)
		gotC += received(t, wc)
		return gotB+gotC == 4
	})
	if gotB != 1 || gotC != 3 {
		t.Fatalf("b got %d, c got %d; want 1 and 3", gotB, gotC)
	}
	if h.Wanted(b)+h.Wanted(c) != 0 {
		t.Fatalf("wants left: b %d, c %d", h.Wanted(b), h.Wanted(c))
	}
	// Past the wants, round-robin again: a too.
	h.Unroute(c)
	got := map[*ipc.Channel]int{}
	for range 4 {
		handBack(t, wa, pipeFDs(t, 1))
	}
	until(t, 5*time.Second, "4 more placed", func() bool {
		got[wa] += received(t, wa)
		got[wb] += received(t, wb)
		return got[wa]+got[wb] == 4
	})
	if got[wa] == 0 || got[wb] == 0 {
		t.Fatalf("without wants the policy spreads: a %d, b %d", got[wa], got[wb])
	}
}

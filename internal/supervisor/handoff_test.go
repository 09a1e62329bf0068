package supervisor

import (
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
)

// testTarget is a target and the worker's end of its channel; keep is set
// as the supervisor keeps it.
func testTarget(t *testing.T, slot int) (*target, *ipc.Channel) {
	t.Helper()
	local, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.FcntlInt(remote.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := ipc.NewChannel(os.NewFile(uintptr(dup), "keep"))
	if err != nil {
		t.Fatal(err)
	}
	worker, err := ipc.NewChannel(remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close(); keep.Close(); worker.Close() })
	return &target{slot: slot, ch: local, keep: keep}, worker
}

// pipeFDs returns n descriptors that stand in for accepted connections.
func pipeFDs(t *testing.T, n int) []int {
	t.Helper()
	var fds []int
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		fd, _ := unix.Dup(int(r.Fd()))
		r.Close()
		fds = append(fds, fd)
	}
	return fds
}

// received drains a worker's channel without waiting and returns how many
// descriptors it got (closing them).
func received(t *testing.T, w *ipc.Channel) int {
	t.Helper()
	buf := make([]byte, ipc.MaxFrame)
	n := 0
	for {
		_, fds, err := w.TryRecv(buf, nil)
		if err != nil {
			return n
		}
		n += len(fds)
		ipc.CloseAll(fds)
	}
}

func newTestHandoff(queueMax int, queueTimeout time.Duration) (*handoff, balancer.Balancer[*target]) {
	bal := balancer.NewRoundRobin[*target]()
	return newHandoff(bal, zap.NewNop(), queueMax, queueTimeout), bal
}

func TestHandoffSpreadsAndBatches(t *testing.T) {
	h, bal := newTestHandoff(16, time.Minute)
	a, wa := testTarget(t, 1)
	b, wb := testTarget(t, 2)
	bal.Add(a)
	bal.Add(b)
	h.dispatch(pipeFDs(t, 10), nil)
	if na, nb := received(t, wa), received(t, wb); na != 5 || nb != 5 {
		t.Fatalf("want 5 and 5, have %d and %d", na, nb)
	}
	if a.Load() != 5 || b.Load() != 5 {
		t.Fatalf("loads %d %d", a.Load(), b.Load())
	}
}

func TestHandoffSkipsDeadWorker(t *testing.T) {
	h, bal := newTestHandoff(16, time.Minute)
	a, _ := testTarget(t, 1)
	b, wb := testTarget(t, 2)
	bal.Add(a)
	bal.Add(b)
	a.ch.Close() // died between pick and send
	h.dispatch(pipeFDs(t, 6), nil)
	if n := received(t, wb); n != 6 {
		t.Fatalf("live worker got %d of 6", n)
	}
	if bal.Len() != 1 {
		t.Fatal("dead worker still in rotation")
	}
}

// A worker that stops reading fills its queue; the others keep getting
// connections and nothing is lost.
func TestHandoffStuckWorkerDoesNotStall(t *testing.T) {
	h, bal := newTestHandoff(16, time.Minute)
	a, wa := testTarget(t, 1)
	b, wb := testTarget(t, 2)
	bal.Add(a)
	bal.Add(b)
	sentB, total := 0, 0
	// Until a's queue is full, then 50 rounds more; bounded either way.
	for i, extra := 0, 0; i < 20000 && extra < 50; i++ {
		h.dispatch(pipeFDs(t, 2), nil)
		total += 2
		sentB += received(t, wb) // b keeps reading; a never does
		if h.failures.Load() > 0 {
			extra++
		}
	}
	if h.failures.Load() == 0 {
		t.Fatal("the stuck worker's queue never filled: the test did not test anything")
	}
	inA := received(t, wa)
	if inA+sentB != total {
		t.Fatalf("%d in the stuck worker + %d in the live one, want %d", inA, sentB, total)
	}
}

func TestHandoffQueueBounds(t *testing.T) {
	h, bal := newTestHandoff(3, 50*time.Millisecond)
	h.dispatch(pipeFDs(t, 5), nil) // nobody ready: 3 queued, 2 dropped
	if h.npend.Load() != 3 || h.dropped.Load() != 2 {
		t.Fatalf("pending %d dropped %d, want 3 and 2", h.npend.Load(), h.dropped.Load())
	}
	a, wa := testTarget(t, 1)
	bal.Add(a)
	h.flush() // a worker became ready
	if n := received(t, wa); n != 3 || h.npend.Load() != 0 {
		t.Fatalf("flushed %d, pending %d", n, h.npend.Load())
	}
	bal.Remove(a)
	h.dispatch(pipeFDs(t, 1), nil)
	deadline := time.Now().Add(5 * time.Second)
	for h.npend.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("queued connection never expired")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h.dropped.Load() != 3 {
		t.Fatalf("dropped %d, want 3", h.dropped.Load())
	}
}

// Connections queued for a worker that died are read back and handed to
// another one.
func TestHandoffRecover(t *testing.T) {
	h, bal := newTestHandoff(16, time.Minute)
	a, wa := testTarget(t, 1)
	bal.Add(a)
	h.dispatch(pipeFDs(t, 4), nil)
	wa.Close() // the worker dies with 4 connections unread
	b, wb := testTarget(t, 2)
	bal.Add(b)
	if n := h.recover(a); n != 4 {
		t.Fatalf("recovered %d, want 4", n)
	}
	if n := received(t, wb); n != 4 {
		t.Fatalf("other worker got %d, want 4", n)
	}
	if bal.Len() != 1 {
		t.Fatal("recovered target still in rotation")
	}
}

// Connections queued because every worker's queue was full are offered
// again soon, without waiting for another accept.
func TestHandoffRetriesFullQueues(t *testing.T) {
	h, bal := newTestHandoff(1<<16, time.Minute)
	a, wa := testTarget(t, 1)
	bal.Add(a)
	total := 0
	for i := 0; i < 20000 && h.npend.Load() == 0; i++ {
		h.dispatch(pipeFDs(t, 1), nil)
		total++
	}
	if h.npend.Load() == 0 {
		t.Fatal("the worker's queue never filled")
	}
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for got < total {
		if time.Now().After(deadline) {
			t.Fatalf("worker got %d of %d; %d still queued", got, total, h.npend.Load())
		}
		got += received(t, wa)
		time.Sleep(time.Millisecond)
	}
}

package handoff

import (
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
)

// testTarget is a target and the worker's end of its channel; keep is set
// as the supervisor keeps it.
func testTarget(t testing.TB, slot int) (*Target, *ipc.Channel) {
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
	return NewTarget(slot, NewFrames(local, keep, zap.NewNop())), worker
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
	n := 0
	for _, size := range frames(t, w) {
		n += size
	}
	return n
}

func newTestHandoff(queueMax int, queueTimeout time.Duration) (*Handoff, balancer.Balancer[*Target]) {
	h, _ := New("round-robin", zap.NewNop(), queueMax, queueTimeout)
	return h, h.policy
}

// twoWorkers is a handoff to two ready workers, a and b, with the worker
// ends of their channels; oneCPU as the supervisor would find it.
func twoWorkers(t *testing.T, oneCPU bool) (h *Handoff, a, b *Target, wa, wb *ipc.Channel) {
	h, bal := newTestHandoff(16, time.Minute)
	h.oneCPU = oneCPU
	a, wa = testTarget(t, 1)
	b, wb = testTarget(t, 2)
	bal.Add(a)
	bal.Add(b)
	return h, a, b, wa, wb
}

// frames drains a worker's channel without waiting and returns the number
// of descriptors in each frame (closing them).
func frames(t *testing.T, w *ipc.Channel) []int {
	t.Helper()
	buf := make([]byte, ipc.MaxFrame)
	var sizes []int
	for {
		_, fds, err := w.TryRecv(buf, nil)
		if err != nil {
			return sizes
		}
		sizes = append(sizes, len(fds))
		ipc.CloseAll(fds)
	}
}

func TestHandoffSpreadsAndBatches(t *testing.T) {
	h, a, b, wa, wb := twoWorkers(t, false)
	h.dispatch(pipeFDs(t, 10), nil, new(batch))
	// One frame each: connections are picked one by one, then those for
	// the same worker travel together.
	if fa, fb := frames(t, wa), frames(t, wb); !slices.Equal(fa, []int{5}) || !slices.Equal(fb, []int{5}) {
		t.Fatalf("want one frame of 5 each, have %v and %v", fa, fb)
	}
	if a.Load() != 5 || b.Load() != 5 {
		t.Fatalf("loads %d %d", a.Load(), b.Load())
	}
	// A burst of one is one pick: sequential connections alternate.
	for i := range 4 {
		h.dispatch(pipeFDs(t, 1), nil, new(batch))
		want := []*ipc.Channel{wa, wb}[i%2]
		if n := received(t, want); n != 1 {
			t.Fatalf("connection %d: want it at worker %d, have %d there", i, i%2+1, n)
		}
	}
}

// With one CPU, a burst goes whole to one worker (waking two workers that
// must take turns on the CPU only adds context switches); the next burst
// goes to the next worker.
func TestHandoffOneCPUBurstsGoWhole(t *testing.T) {
	h, _, _, wa, wb := twoWorkers(t, true)
	h.dispatch(pipeFDs(t, 7), nil, new(batch))
	if fa, fb := frames(t, wa), frames(t, wb); !slices.Equal(fa, []int{7}) || len(fb) != 0 {
		t.Fatalf("first burst: want [7] and [], have %v and %v", fa, fb)
	}
	h.dispatch(pipeFDs(t, 3), nil, new(batch))
	if fa, fb := frames(t, wa), frames(t, wb); len(fa) != 0 || !slices.Equal(fb, []int{3}) {
		t.Fatalf("second burst: want [] and [3], have %v and %v", fa, fb)
	}
}

// Peer addresses go only to a worker that said it takes them; the other
// gets the frame every worker understands.
func TestHandoffPeersOnlyToWorkersThatTakeThem(t *testing.T) {
	h, a, _, wa, wb := twoWorkers(t, false)
	a.peers.Store(true)
	var peers []ipc.Peer
	for i := range 4 {
		sa := unix.RawSockaddrAny{}
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		in.Family = unix.AF_INET
		in.Addr = [4]byte{192, 0, 2, byte(i)}
		peers = append(peers, ipc.PeerOf(&sa))
	}
	h.dispatch(pipeFDs(t, 4), peers, new(batch))
	buf := make([]byte, ipc.MaxFrame)
	f, fds, err := wa.TryRecv(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	ipc.CloseAll(fds)
	// a got connections 0 and 2 of the burst, with their own addresses.
	if f.Count() != 2 || ipc.PeerAddr(f.Peers()).IP.String() != "192.0.2.0" || ipc.PeerAddr(f.Peers()[ipc.PeerSize:]).IP.String() != "192.0.2.2" {
		t.Fatalf("worker taking peers got %d connections, peers %x", f.Count(), f.Peers())
	}
	f, fds, err = wb.TryRecv(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	ipc.CloseAll(fds)
	if f.Count() != 2 || len(f.Peers()) != 0 {
		t.Fatalf("worker not taking peers got %d connections, peers %x", f.Count(), f.Peers())
	}
}

// until polls cond until it holds or the deadline passes.
func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A send error that is not a closed channel (ENOBUFS under memory
// pressure) moves the connection to another worker and keeps the worker:
// after a short back-off it gets connections again.
func TestHandoffTransientErrorKeepsWorker(t *testing.T) {
	h, a, _, wa, wb := twoWorkers(t, false)
	var failA atomic.Bool
	failA.Store(true)
	fa := FramesOf(a)
	fa.sendmsg = func(frame []byte, fds []int) error {
		if failA.CompareAndSwap(true, false) {
			return fmt.Errorf("ipc: send: %w", unix.ENOBUFS)
		}
		return fa.ch.Send(frame, fds)
	}
	h.dispatch(pipeFDs(t, 1), nil, new(batch)) // a's turn: fails, goes to b
	if na, nb := received(t, wa), received(t, wb); na != 0 || nb != 1 {
		t.Fatalf("failed connection: want it at b, have %d at a, %d at b", na, nb)
	}
	if want, have := 2, h.policy.Len(); want != have {
		t.Fatalf("workers in rotation after ENOBUFS: want %d, have %d", want, have)
	}
	until(t, 2*time.Second, "worker still backing off", a.Available)
	h.dispatch(pipeFDs(t, 2), nil, new(batch))
	if na, nb := received(t, wa), received(t, wb); na != 1 || nb != 1 {
		t.Fatalf("after the back-off: want 1 and 1, have %d at a, %d at b", na, nb)
	}
	if want, have := uint64(0), h.dropped.Load(); want != have {
		t.Fatalf("dropped: want %d, have %d", want, have)
	}
}

// A closed channel removes the worker for good.
func TestHandoffClosedChannelRemovesWorker(t *testing.T) {
	h, a, _, wa, wb := twoWorkers(t, false)
	FramesOf(a).sendmsg = func([]byte, []int) error { return ipc.ErrPeerClosed }
	h.dispatch(pipeFDs(t, 2), nil, new(batch))
	if na, nb := received(t, wa), received(t, wb); na != 0 || nb != 2 {
		t.Fatalf("want both at b, have %d at a, %d at b", na, nb)
	}
	if want, have := []*Target{h.policy.Members()[0]}, h.policy.Members(); len(have) != 1 || have[0] == a {
		t.Fatalf("members: want %v, have %v", want, have)
	}
}

// A worker that has maxUntaken connections it has not taken gets no more;
// the others get them.
func TestHandoffCapsUntaken(t *testing.T) {
	h, a, _, wa, wb := twoWorkers(t, false)
	scratch := new(batch)
	nb := 0
	for range 3 * maxUntaken / maxBatch {
		h.dispatch(pipeFDs(t, maxBatch), nil, scratch)
		nb += received(t, wb) // b keeps up; a never reads
	}
	na := received(t, wa)
	if na != maxUntaken || nb != 2*maxUntaken {
		t.Fatalf("want %d at the worker that does not read and %d at the other, have %d and %d", maxUntaken, 2*maxUntaken, na, nb)
	}
	if h.npend.Load() != 0 || h.dropped.Load() != 0 {
		t.Fatalf("pending %d, dropped %d", h.npend.Load(), h.dropped.Load())
	}
	// Taken now: a has room again as soon as it is asked.
	if !a.hasRoom() {
		t.Fatal("a has no room after taking everything")
	}
}

// Connections queued while every worker is full wait without retries:
// no send is tried until the worker reads, and then the queue goes out in
// full frames, woken by writability alone.
func TestHandoffQueueWaitsForWritability(t *testing.T) {
	h, bal := newTestHandoff(4096, time.Minute)
	a, wa := testTarget(t, 1)
	bal.Add(a)
	var sends atomic.Int64
	fa := FramesOf(a)
	fa.sendmsg = func(frame []byte, fds []int) error {
		sends.Add(1)
		return fa.ch.Send(frame, fds)
	}
	scratch := new(batch)
	for range maxUntaken / maxBatch {
		h.dispatch(pipeFDs(t, maxBatch), nil, scratch)
	}
	const queued = 300
	for _, fd := range pipeFDs(t, queued) {
		h.dispatch([]int{fd}, nil, scratch) // one by one, as a slow trickle comes
	}
	if want, have := int32(queued), h.npend.Load(); want != have {
		t.Fatalf("queued: want %d, have %d", want, have)
	}
	// One send per full frame and at most one that found the worker at
	// its bound: none for the queued connections while it reads nothing.
	if want, have := int64(maxUntaken/maxBatch), sends.Load(); have != want {
		t.Fatalf("sends while the worker reads nothing: want %d, have %d", want, have)
	}
	var sizes []int
	until(t, 5*time.Second, "queue not delivered", func() bool {
		sizes = append(sizes, frames(t, wa)...)
		return h.npend.Load() == 0 && sum(sizes) == maxUntaken+queued
	})
	flushed := sizes[maxUntaken/maxBatch:]
	for i, n := range flushed {
		if n != maxBatch && i != len(flushed)-1 {
			t.Fatalf("queued connections sent in frames %v: want full frames", flushed)
		}
	}
	if want, have := int64(maxUntaken/maxBatch+len(flushed)), sends.Load(); have > want+2 {
		t.Fatalf("sends: want at most %d, have %d", want+2, have)
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// A worker that stops taking connections while another is ready leaves
// the rotation after stallAfter, and what it was sent comes out of the
// other; it comes back once its queue is empty, one connection at a time
// until it takes one.
func TestHandoffStalledWorkerReadBack(t *testing.T) {
	h, a, _, wa, wb := twoWorkers(t, false)
	h.dispatch(pipeFDs(t, 10), nil, new(batch))
	if want, have := 5, received(t, wb); want != have {
		t.Fatalf("b: want %d, have %d", want, have)
	}
	t0 := time.Now()
	h.Check(t0)
	h.Check(t0.Add(stallAfter / 2))
	if !a.Available() {
		t.Fatal("a left the rotation before stallAfter")
	}
	h.Check(t0.Add(stallAfter + time.Millisecond))
	if a.Available() {
		t.Fatal("a still in rotation after stallAfter without taking anything")
	}
	if want, have := 5, received(t, wb); want != have {
		t.Fatalf("read back from a, at b: want %d, have %d", want, have)
	}
	if want, have := int64(0), a.Load(); want != have {
		t.Fatalf("a's load after the read-back: want %d, have %d", want, have)
	}
	// Its queue is empty: back in rotation, on probation.
	h.Check(t0.Add(stallAfter + 250*time.Millisecond))
	if !a.Available() {
		t.Fatal("a not back in rotation with an empty queue")
	}
	h.dispatch(pipeFDs(t, 4), nil, new(batch))
	if na, nb := received(t, wa), received(t, wb); na != 1 || nb != 3 {
		t.Fatalf("on probation: want 1 at a and 3 at b, have %d and %d", na, nb)
	}
	// a took it: off probation, its full share again.
	h.Check(t0.Add(stallAfter + 500*time.Millisecond))
	until(t, 2*time.Second, "a still full", a.Available)
	h.dispatch(pipeFDs(t, 4), nil, new(batch))
	if na, nb := received(t, wa), received(t, wb); na != 2 || nb != 2 {
		t.Fatalf("after taking one: want 2 and 2, have %d and %d", na, nb)
	}
	if h.dropped.Load() != 0 || h.npend.Load() != 0 {
		t.Fatalf("dropped %d, pending %d", h.dropped.Load(), h.npend.Load())
	}
}

// The only worker is not taken out of rotation: there is nowhere better.
func TestHandoffStalledOnlyWorkerStays(t *testing.T) {
	h, bal := newTestHandoff(16, time.Minute)
	a, wa := testTarget(t, 1)
	bal.Add(a)
	h.dispatch(pipeFDs(t, 3), nil, new(batch))
	t0 := time.Now()
	h.Check(t0)
	h.Check(t0.Add(2 * stallAfter))
	if !a.Available() {
		t.Fatal("the only worker left the rotation")
	}
	if want, have := 3, received(t, wa); want != have {
		t.Fatalf("want %d still queued at a, have %d", want, have)
	}
}

// A paused worker gets no connections, whatever its routing, until it
// resumes; what it had queued is read back if it does not move.
func TestHandoffPause(t *testing.T) {
	h, a, _, wa, wb := twoWorkers(t, false)
	h.dispatch(pipeFDs(t, 2), nil, new(batch)) // one queued at each
	h.Pause(a, true)
	h.dispatch(pipeFDs(t, 4), nil, new(batch))
	if want, have := 5, received(t, wb); want != have {
		t.Fatalf("paused: want %d at b, have %d", want, have)
	}
	t0 := time.Now()
	h.Check(t0)
	h.Check(t0.Add(stallAfter + time.Millisecond))
	if want, have := 1, received(t, wb); want != have {
		t.Fatalf("read back from the paused worker: want %d at b, have %d", want, have)
	}
	if n := received(t, wa); n != 0 {
		t.Fatalf("paused worker still has %d queued", n)
	}
	h.Pause(a, false)
	h.Check(t0.Add(stallAfter + 250*time.Millisecond)) // empty: no longer stalled
	h.dispatch(pipeFDs(t, 2), nil, new(batch))
	if na, nb := received(t, wa), received(t, wb); na != 1 || nb != 1 {
		t.Fatalf("resumed: want 1 and 1, have %d and %d", na, nb)
	}
}

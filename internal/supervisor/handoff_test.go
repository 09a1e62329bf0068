package supervisor

import (
	"os"
	"slices"
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
func testTarget(t testing.TB, slot int) (*target, *ipc.Channel) {
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
	n := 0
	for _, size := range frames(t, w) {
		n += size
	}
	return n
}

func newTestHandoff(queueMax int, queueTimeout time.Duration) (*handoff, balancer.Balancer[*target]) {
	bal := balancer.NewRoundRobin[*target]()
	return newHandoff(bal, zap.NewNop(), queueMax, queueTimeout), bal
}

// twoWorkers is a handoff to two ready workers, a and b, with the worker
// ends of their channels; oneCPU as the supervisor would find it.
func twoWorkers(t *testing.T, oneCPU bool) (h *handoff, a, b *target, wa, wb *ipc.Channel) {
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

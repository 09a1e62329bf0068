package ipc

import (
	"errors"
	"io"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
)

// pair returns two Channels connected to each other.
func pair(t testing.TB) (*Channel, *Channel) {
	t.Helper()
	a, bf, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewChannel(bf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestChannelRoundTrip(t *testing.T) {
	a, b := pair(t)
	hb := Heartbeat{Conns: 2, Requests: 9, Healthy: true}
	if err := a.Send(AppendHeartbeat(nil, hb), nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxFrame)
	f, fds, err := b.Recv(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := hb, f.Heartbeat(); f.Type != TypeHeartbeat || want != have || len(fds) != 0 {
		t.Fatalf("want heartbeat %+v, have %v %+v fds=%v", want, f.Type, have, fds)
	}
}

func TestChannelPassesDescriptors(t *testing.T) {
	a, b := pair(t)
	var sent []*os.File
	var sentFDs []int
	for range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		sent = append(sent, w)
		sentFDs = append(sentFDs, int(w.Fd()))
	}
	if err := a.Send(AppendConns(nil, len(sentFDs)), sentFDs); err != nil {
		t.Fatal(err)
	}
	f, fds, err := b.Recv(make([]byte, MaxFrame), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := len(sent), len(fds); f.Count() != want || have != want {
		t.Fatalf("want %d fds, have %d (count %d)", want, have, f.Count())
	}
	for i, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd %d: close-on-exec not set (flags %d, %v)", fd, flags, err)
		}
		// The received descriptor is the same pipe: same inode.
		var st1, st2 unix.Stat_t
		unix.Fstat(fd, &st1)
		unix.Fstat(sentFDs[i], &st2)
		if st1.Ino != st2.Ino {
			t.Errorf("fd %d: inode %d, want %d", i, st1.Ino, st2.Ino)
		}
		unix.Close(fd)
	}
}

func TestChannelTryRecv(t *testing.T) {
	a, b := pair(t)
	buf := make([]byte, MaxFrame)
	if _, _, err := b.TryRecv(buf, nil); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("empty queue: want ErrWouldBlock, have %v", err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if err := a.Send(AppendConns(nil, 1), []int{int(r.Fd())}); err != nil {
		t.Fatal(err)
	}
	f, fds, err := b.TryRecv(buf, nil)
	if err != nil || f.Type != TypeConns || len(fds) != 1 {
		t.Fatalf("want one conns frame with one fd, have %v %v %v", f.Type, fds, err)
	}
	CloseAll(fds)
}

func TestChannelEOF(t *testing.T) {
	a, b := pair(t)
	a.Close()
	if _, _, err := b.Recv(make([]byte, MaxFrame), nil); !errors.Is(err, io.EOF) {
		t.Fatalf("want io.EOF, have %v", err)
	}
	if err := b.Send(AppendUint32(nil, TypeLoad, 1), nil); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("send to closed peer: want ErrPeerClosed, have %v", err)
	}
}

func TestChannelSendWouldBlock(t *testing.T) {
	a, _ := pair(t)
	frame := AppendUint32(nil, TypeLoad, 1)
	var err error
	for i := 0; i < 1_000_000 && err == nil; i++ {
		err = a.Send(frame, nil)
	}
	if !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("want ErrWouldBlock once the reader stops, have %v", err)
	}
}

// rawSend writes bytes and fds with no framing checks, as a broken peer would.
func rawSend(t *testing.T, c *Channel, b []byte, fds []int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sbuf, c.soob = b, appendRights(c.soob[:0], fds)
	if err := c.rc.Control(c.sendFn); err != nil || c.serr != nil {
		t.Fatal(err, c.serr)
	}
}

func TestChannelMalformedClosesDescriptors(t *testing.T) {
	big := make([]byte, 300)
	big[0], big[1], big[2] = Version, byte(TypeMessage), 0x2c
	big[3] = 1
	for _, tc := range []struct {
		name   string
		frame  []byte
		nfds   int
		bufLen int
		want   error
	}{
		{"fds on a non-conns frame", AppendUint32(nil, TypeLoad, 1), 1, MaxFrame, ErrUnexpectedFDs},
		{"count says more than sent", AppendConns(nil, 2), 1, MaxFrame, ErrFDs},
		{"bad version with fds", []byte{9, byte(TypeConns), 1, 0, 1}, 1, MaxFrame, ErrVersion},
		{"frame larger than buffer", big, 0, 16, ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pair(t)
			var fds []int
			var files []*os.File
			for range tc.nfds {
				r, w, _ := os.Pipe()
				files = append(files, r, w)
				fds = append(fds, int(r.Fd()))
			}
			defer func() {
				for _, f := range files {
					f.Close()
				}
			}()
			rawSend(t, a, tc.frame, fds)
			before, err := fdtest.List(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			_, got, err := b.Recv(make([]byte, tc.bufLen), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, have %v", tc.want, err)
			}
			if len(got) != 0 {
				t.Fatalf("fds returned with an error: %v", got)
			}
			after, err := fdtest.List(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(before, after) {
				t.Fatalf("received descriptors leaked: open fds were %v, are %v", before, after)
			}
		})
	}
}

// A worker that sends descriptors to the supervisor, which never receives
// any, cannot make it hold them: each frame's descriptors are closed at once,
// whatever the frame says and whether the caller asked for descriptors.
func TestChannelSupervisorEndClosesDescriptors(t *testing.T) {
	sup, worker := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fds := make([]int, MaxFDs) // one pipe, MaxFDs times: each arrives as its own descriptor
	for i := range fds {
		fds[i] = int(w.Fd())
	}
	buf := make([]byte, MaxFrame)
	before := fdtest.Open(t)
	for i := range 20 {
		frame := ConnsFrame(MaxFDs)
		if i%2 == 1 {
			frame = AppendUint32(nil, TypeLoad, 1)
		}
		if err := worker.Send(frame, fds); err != nil {
			t.Fatal(err)
		}
		recv := sup.Recv
		if i%4 >= 2 {
			recv = sup.TryRecv
		}
		_, got, err := recv(buf, nil)
		if !errors.Is(err, ErrUnexpectedFDs) || len(got) != 0 {
			t.Fatalf("frame %d: want ErrUnexpectedFDs and no descriptors, have %v, %v", i, err, got)
		}
	}
	if want, have := before, fdtest.Open(t); want != have {
		t.Fatalf("open fds: want %d, have %d: received descriptors leaked", want, have)
	}
}

// When the receiver runs out of descriptors the kernel installs what fits and
// sets MSG_CTRUNC: Recv returns the frame, which says how many were sent, and
// the descriptors that arrived, with ErrFDsTruncated.
func TestChannelTruncatedDescriptors(t *testing.T) {
	a, b := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fds := make([]int, MaxFDs)
	for i := range fds {
		fds[i] = int(w.Fd())
	}
	if err := a.Send(ConnsFrame(MaxFDs), fds); err != nil {
		t.Fatal(err)
	}
	w.Close() // the frame holds the only references now

	const room = 5
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(fdtest.Open(t) + room)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	f, got, err := b.Recv(make([]byte, MaxFrame), nil)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	defer CloseAll(got)
	if !errors.Is(err, ErrFDsTruncated) {
		t.Fatalf("want ErrFDsTruncated, have %v", err)
	}
	if f.Type != TypeConns || f.Count() != MaxFDs {
		t.Fatalf("want the conns frame announcing %d, have %v %d", MaxFDs, f.Type, f.Count())
	}
	// RLIMIT_NOFILE bounds descriptor numbers, not their count: free
	// numbers below the limit fit too.
	if len(got) == 0 || len(got) >= MaxFDs {
		t.Fatalf("want some but not all %d descriptors, have %d", MaxFDs, len(got))
	}
	// The kernel released the ones that did not fit: once the received
	// ones are closed, nothing holds the pipe's write end.
	CloseAll(got)
	got = nil
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("pipe still held open after the truncated frame: %d, %v", n, err)
	}
}

func TestAppendParseRights(t *testing.T) {
	oob := appendRights(nil, []int{5, 6, 7})
	oob = appendRights(oob, []int{8})
	fds, err := parseRights(oob, nil)
	if err != nil || len(fds) != 4 || fds[0] != 5 || fds[3] != 8 {
		t.Fatalf("have %v, %v", fds, err)
	}
	if _, err := parseRights([]byte{0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, nil); !errors.Is(err, ErrTruncated) {
		t.Fatalf("bad cmsg length: want ErrTruncated, have %v", err)
	}
}

func BenchmarkHandoff(b *testing.B) {
	a, c := pair(b)
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	fds := []int{int(r.Fd())}
	frame := AppendConns(nil, 1)
	buf := make([]byte, MaxFrame)
	got := make([]int, 0, MaxFDs)
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Send(frame, fds); err != nil {
			b.Fatal(err)
		}
		var err error
		_, got, err = c.Recv(buf, got[:0])
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(got[0])
	}
}

package nodeipc

import (
	"bytes"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
)

// TestWorkerGoneGivesBackConnections: a worker that goes away before it
// answers a newconn has not started to read that connection, so the owner
// gets it back to hand to another worker, before Disconnected.
func TestWorkerGoneGivesBackConnections(t *testing.T) {
	c, p := rawPair(t)
	open := fdtest.Open(t)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(pipe[1])
	fd := pipe[0] // a connection, as far as the Worker can tell
	events := make(chan Event, 4)
	w := NewWorker(c, events)
	defer w.Close()
	if err := w.NewConn("k", fd); err != nil {
		t.Fatal(err)
	}
	var br bytes.Buffer
	line, fds := readLine(t, p, &br)
	if want := `{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","act":"newconn","key":"k","seq":0}}` + "\n"; line != want || len(fds) != 1 {
		t.Fatalf("worker got %q with %d fds, want %q with 1", line, len(fds), want)
	}
	closeFDs(fds)
	p.Close() // gone without a word, not even the NODE_HANDLE_ACK

	var have []any
	for len(have) < 2 {
		select {
		case ev := <-events:
			have = append(have, ev.Value)
		case <-time.After(deadline):
			t.Fatalf("events %+v, then nothing within %v", have, deadline)
		}
	}
	if r, ok := have[0].(Refused); !ok || r.Key != "k" || r.FD != fd || !r.Gone {
		t.Errorf("first event %+v, want Refused{k %d gone}", have[0], fd)
	}
	if d, ok := have[1].(Disconnected); !ok || d.Err != nil {
		t.Errorf("last event %+v, want Disconnected{nil}", have[1])
	}
	if err := w.NewConn("k", fd); err != ErrClosed {
		t.Errorf("NewConn after the end: %v, want ErrClosed", err)
	}
	unix.Close(fd)
	waitOpen(t, open-2) // the peer and the channel closed, nothing else left
}

// TestWorkerReclaim: once the worker has exited, the connections it did not
// answer are the owner's again, in the order handed; an answer to one that
// comes later is ignored, and the channel's end reports none of them.
func TestWorkerReclaim(t *testing.T) {
	w, p, events, open := handedThree(t)
	fds := w.fds
	var br bytes.Buffer
	_, got := readLine(t, p, &br) // the first handle; the rest wait for its ACK
	closeFDs(got)
	if have := w.Reclaim(); !slices.Equal(have, fds) {
		t.Fatalf("Reclaim = %v, want %v", have, fds)
	}
	if have := w.Reclaim(); len(have) != 0 {
		t.Fatalf("second Reclaim = %v, want none", have)
	}
	// A late accepted:true for the first one must not close it.
	if _, err := p.Write([]byte(`{"cmd":"NODE_CLUSTER","ack":0,"accepted":true,"seq":0}` + "\n")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	select {
	case ev := <-events:
		if _, ok := ev.Value.(Disconnected); !ok {
			t.Fatalf("event %+v after Reclaim, want only Disconnected", ev.Value)
		}
	case <-time.After(deadline):
		t.Fatal("no Disconnected")
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Fatalf("reclaimed descriptor %d closed: %v", fd, err)
		}
		unix.Close(fd)
	}
	waitOpen(t, open-2)
}

// TestWorkerWithdraw: while the worker has not acknowledged the handle in
// flight, the connections queued behind it are the owner's to take back;
// the worker never gets them, and gets the next connection handed after
// them once it acknowledges.
func TestWorkerWithdraw(t *testing.T) {
	w, p, events, open := handedThree(t)
	fds := w.fds
	var br bytes.Buffer
	line, got := readLine(t, p, &br) // the first handle; the rest wait for its ACK
	closeFDs(got)
	if !bytes.Contains([]byte(line), []byte(`"seq":0`)) {
		t.Fatalf("first line %q, want seq 0", line)
	}
	if have := w.Withdraw(); !slices.Equal(have, fds[1:]) {
		t.Fatalf("Withdraw = %v, want the two queued, %v", have, fds[1:])
	}
	if have := w.Withdraw(); len(have) != 0 {
		t.Fatalf("second Withdraw = %v, want none", have)
	}
	last := pipeFD(t)
	if err := w.NewConn("k", last); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write([]byte(`{"cmd":"NODE_HANDLE_ACK"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	line, got = readLine(t, p, &br)
	closeFDs(got)
	if !bytes.Contains([]byte(line), []byte(`"seq":3`)) || len(got) != 1 {
		t.Fatalf("after the ACK the worker got %q with %d fds, want seq 3 with 1", line, len(got))
	}
	// The first and the last are still pending: the worker's end gives
	// them back, and nothing of the withdrawn ones.
	p.Close()
	var refused []int
	for len(refused) < 2 {
		select {
		case ev := <-events:
			r, ok := ev.Value.(Refused)
			if !ok {
				t.Fatalf("event %+v, want Refused", ev.Value)
			}
			refused = append(refused, r.FD)
		case <-time.After(deadline):
			t.Fatalf("refused %v, then nothing within %v", refused, deadline)
		}
	}
	slices.Sort(refused)
	want := []int{fds[0], last}
	slices.Sort(want)
	if !slices.Equal(refused, want) {
		t.Fatalf("refused %v at the end, want %v", refused, want)
	}
	for _, fd := range append(fds, last) {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Fatalf("descriptor %d closed: %v", fd, err)
		}
		unix.Close(fd)
	}
	waitOpen(t, open-2)
}

// TestWorkerGivesUpGivesBack: a worker that cannot receive a descriptor
// (it is out of them itself) answers NODE_HANDLE_NACK; after the last
// retransmission the channel gives up, and the connection, which the
// worker never got, is the owner's again as Refused, not left pending for
// as long as the worker lives.
func TestWorkerGivesUpGivesBack(t *testing.T) {
	c, p := rawPair(t)
	open := fdtest.Open(t)
	events := make(chan Event, 8)
	w := NewWorker(c, events)
	defer w.Close()
	fd := pipeFD(t)
	if err := w.NewConn("k", fd); err != nil {
		t.Fatal(err)
	}
	var br bytes.Buffer
	for range maxRetransmissions + 1 {
		_, got := readLine(t, p, &br)
		closeFDs(got)
		if _, err := p.Write(nackLine); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-events:
		if r, ok := ev.Value.(Refused); !ok || r.FD != fd || r.Key != "k" || r.Gone {
			t.Fatalf("event %+v, want Refused{k %d}", ev.Value, fd)
		}
	case <-time.After(deadline):
		t.Fatalf("the connection not given back within %v of the last NACK", deadline)
	}
	if have := w.Reclaim(); len(have) != 0 {
		t.Fatalf("Reclaim = %v after it was given back, want none", have)
	}
	unix.Close(fd)
	p.Close()
	waitOpen(t, open-2)
}

// handedWorker is a Worker and the connections handedThree handed it.
type handedWorker struct {
	*Worker
	fds []int
}

// handedThree starts a Worker on a channel whose worker's end the test
// reads raw, and hands it three connections for key "k". open is the
// number of descriptors open before the three were made.
func handedThree(t *testing.T) (w handedWorker, p *net.UnixConn, events chan Event, open int) {
	t.Helper()
	c, p := rawPair(t)
	open = fdtest.Open(t)
	events = make(chan Event, 8)
	w.Worker = NewWorker(c, events)
	t.Cleanup(func() { w.Close() })
	w.fds = []int{pipeFD(t), pipeFD(t), pipeFD(t)}
	for _, fd := range w.fds {
		if err := w.NewConn("k", fd); err != nil {
			t.Fatal(err)
		}
	}
	return w, p, events, open
}

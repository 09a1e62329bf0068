package nodeipc

import (
	"bytes"
	"encoding/json"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
)

// TestFastPathLines: the per-connection lines written and read without
// encoding/json are what encoding/json would write and what Node writes,
// and anything spelled otherwise is left to the general path.
func TestFastPathLines(t *testing.T) {
	key, _ := json.Marshal(`127.0.0.1:3000:4:-1:0"\`)
	have := newconnLine(key, 42)
	want, err := marshalLine(handleWrapper{Cmd: cmdHandle, Type: HandleNative,
		Msg: actMsg{Cmd: cmdCluster, Act: "newconn", Key: `127.0.0.1:3000:4:-1:0"\`, Seq: 42}})
	if err != nil || !bytes.Equal(have, want) {
		t.Errorf("newconnLine = %s, want %s (%v)", have, want, err)
	}
	for _, c := range []struct {
		line     string
		ack      int64
		accepted bool
		ok       bool
	}{
		{`{"cmd":"NODE_CLUSTER","ack":5,"accepted":true,"seq":3}`, 5, true, true},
		{`{"cmd":"NODE_CLUSTER","ack":0,"accepted":false,"seq":0}`, 0, false, true},
		{`{"cmd":"NODE_CLUSTER","ack":5,"accepted":true,"seq":3,"x":1}`, 0, false, false},
		{`{"cmd":"NODE_CLUSTER","ack":05,"accepted":true,"seq":3}`, 0, false, false},
		{`{"cmd":"NODE_CLUSTER","ack":5.5,"accepted":true,"seq":3}`, 0, false, false},
		{`{"cmd":"NODE_CLUSTER","ack":5,"accepted":1,"seq":3}`, 0, false, false},
		{`{"cmd":"NODE_CLUSTER","ack":12345678901234567,"accepted":true,"seq":3}`, 0, false, false},
		{`{"cmd":"NODE_CLUSTER","ack":5,"accepted":true,"seq":3`, 0, false, false},
		{`{"ack":5,"cmd":"NODE_CLUSTER","accepted":true,"seq":3}`, 0, false, false},
	} {
		ack, accepted, ok := clusterAck([]byte(c.line))
		if ok != c.ok || (ok && (ack != c.ack || accepted != c.accepted)) {
			t.Errorf("clusterAck(%s) = %d %v %v, want %d %v %v", c.line, ack, accepted, ok, c.ack, c.accepted, c.ok)
		}
		if ok && !json.Valid([]byte(c.line)) {
			t.Errorf("clusterAck took invalid JSON %s", c.line)
		}
	}
}

// TestWorkerIgnoresAnswerBeforeAck: the channel writes a newconn's own
// descriptor (lent, not a duplicate), so an answer that comes before the
// NODE_HANDLE_ACK, which no Node worker sends, must not close it while
// the channel may still write it; the real answer, after the ACK, does.
func TestWorkerIgnoresAnswerBeforeAck(t *testing.T) {
	w, p, events, accepted, open := acceptingWorker(t)
	fd := fakeConn(t)
	if err := w.NewConn("k", fd); err != nil {
		t.Fatal(err)
	}
	var br bytes.Buffer
	_, fds := readLine(t, p, &br)
	closeFDs(fds)
	// The early answer, then a message whose event says it was read.
	p.Write([]byte(`{"cmd":"NODE_CLUSTER","ack":0,"accepted":true,"seq":0}` + "\n" +
		`{"cmd":"NODE_CLUSTER","act":"online","seq":1}` + "\n"))
	select {
	case ev := <-events:
		if _, ok := ev.Value.(Online); !ok {
			t.Fatalf("event %+v, want Online", ev.Value)
		}
	case <-time.After(deadline):
		t.Fatal("no Online event")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("fd closed by an answer that came before the ACK: %v", err)
	}
	if len(accepted) > 0 {
		t.Fatal("an answer that came before the ACK was taken")
	}
	p.Write([]byte(`{"cmd":"NODE_HANDLE_ACK"}` + "\n" + `{"cmd":"NODE_CLUSTER","ack":0,"accepted":true,"seq":2}` + "\n"))
	select {
	case k := <-accepted:
		if k != "k" {
			t.Errorf("accepted %q, want k", k)
		}
	case <-time.After(deadline):
		t.Fatal("the answer after the ACK was not taken")
	}
	waitOpen(t, open) // fd closed by the real answer
}

// TestWorkerStickyConn: a connection for a setupWorker worker goes as
// @socket.io/sticky's primary sends it, a net.Socket handle with an empty
// first chunk, and is taken once the worker acknowledges the handle.
func TestWorkerStickyConn(t *testing.T) {
	w, p, _, accepted, open := acceptingWorker(t)
	if err := w.StickyConn(fakeConn(t)); err != nil {
		t.Fatal(err)
	}
	var br bytes.Buffer
	line, fds := readLine(t, p, &br)
	if want := `{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"type":"sticky:connection","data":""}}` + "\n"; line != want || len(fds) != 1 {
		t.Fatalf("worker got %q with %d fds, want %q with 1", line, len(fds), want)
	}
	closeFDs(fds)
	p.Write([]byte(`{"cmd":"NODE_HANDLE_ACK"}` + "\n"))
	select {
	case <-accepted:
	case <-time.After(deadline):
		t.Fatal("not taken on the ACK")
	}
	waitOpen(t, open)
}

// acceptingWorker is a Worker on one end of a channel, p the other, whose
// accepted connections are told on accepted; open counts the process's
// descriptors before any connection.
func acceptingWorker(t *testing.T) (w *Worker, p *net.UnixConn, events chan Event, accepted chan string, open int) {
	c, p := rawPair(t)
	open = fdtest.Open(t)
	events = make(chan Event, 4)
	w = NewWorker(c, events)
	t.Cleanup(func() { w.Close() })
	accepted = make(chan string, 1)
	w.OnAccepted(func(key string) { accepted <- key })
	return w, p, events, accepted, open
}

// fakeConn is a descriptor that stands for a connection: a pipe's read end.
func fakeConn(t *testing.T) int {
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(pipe[1])
	return pipe[0]
}

// TestRecvCloseOnExec: a descriptor Recv hands over is close-on-exec, or
// a child spawned before the owner closes it would inherit a connection.
func TestRecvCloseOnExec(t *testing.T) {
	c, p := rawPair(t)
	fd := fakeConn(t)
	defer unix.Close(fd)
	line := []byte(`{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"hello":1}}` + "\n")
	if _, _, err := p.WriteMsgUnix(line, unix.UnixRights(fd), nil); err != nil {
		t.Fatal(err)
	}
	m, err := c.Recv()
	if err != nil || m.FD < 0 {
		t.Fatalf("Recv: %+v %v", m, err)
	}
	defer unix.Close(m.FD)
	flags, err := unix.FcntlInt(uintptr(m.FD), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received descriptor flags %#x (%v): want FD_CLOEXEC", flags, err)
	}
}

package nodeipc

import (
	"bytes"
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
	if r, ok := have[0].(Refused); !ok || r.Key != "k" || r.FD != fd {
		t.Errorf("first event %+v, want Refused{k %d}", have[0], fd)
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

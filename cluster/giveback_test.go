package cluster

import (
	"bufio"
	"io"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// A connection busy with a request when the worker is asked to give
// connections back finishes it, then goes back without another ask.
func TestHandBackGiveBackBusy(t *testing.T) {
	r := newHandBackRig(t)
	moved := 0
	// The ask may reach the worker before it has read the half request:
	// the connection then goes back at once, the half request still in
	// the kernel, and the next worker answers it. Try again until the ask
	// finds it busy.
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatal("the ask never found the connection busy")
		}
		c := r.dial()
		br := bufio.NewReader(c)
		// Answered once: the worker has the connection.
		if _, err := io.WriteString(c, post("/0", "x")); err != nil {
			t.Fatal(err)
		}
		if want, have := "old /0 x", answer(t, c, br); want != have {
			t.Fatalf("want %q, have %q", want, have)
		}
		// Half a body: the handler is reading it.
		if _, err := io.WriteString(c, "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na"); err != nil {
			t.Fatal(err)
		}
		if err := r.ctl.Send(ipc.AppendUint32(nil, ipc.TypeGiveBack, 1), nil); err != nil {
			t.Fatal(err)
		}
		early := false
		select {
		case b := <-r.back:
			r.backs.c <- b
			early = true
		case <-time.After(time.Second): // the ask has long arrived: the connection waits for its answer
		}
		if _, err := io.WriteString(c, "b"); err != nil {
			t.Fatal(err)
		}
		want := "old /1 ab"
		if early {
			want = "new /1 ab"
		}
		if have := answer(t, c, br); want != have {
			t.Fatalf("want %q, have %q", want, have)
		}
		moved++
		if early {
			continue
		}
		select {
		case b := <-r.back:
			r.backs.c <- b
		case <-time.After(5 * time.Second):
			t.Fatal("not handed back after its answer")
		}
		if _, err := io.WriteString(c, post("/2", "c")); err != nil {
			t.Fatal(err)
		}
		if want, have := "new /2 c", answer(t, c, br); want != have {
			t.Fatalf("want %q, have %q", want, have)
		}
		break
	}
	r.forward()
	r.drain()
	if have, failed := r.done(); have != moved || failed != 0 {
		t.Fatalf("worker moved %d, failed %d; want %d, 0", have, failed, moved)
	}
}

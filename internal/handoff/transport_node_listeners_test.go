package handoff

import (
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// A Node worker with a server on each of two listeners takes each
// connection with its listener's key; one it refuses goes to the other
// worker still with its listener's key.
func TestHandoffNodeKeyPerListener(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	a, wa, _ := nodeTestTarget(t, h, 1)
	b, wb, _ := nodeTestTarget(t, h, 2)
	for _, tg := range []*Target{a, b} {
		n := NodeOf(tg)
		n.Listen(h, n.w, 1, "u")
	}
	fds := pipeFDs(t, 2)
	var on1 ipc.Peer
	on1.SetListener(1)
	h.dispatch(fds[:1], []ipc.Peer{on1}, new(batch))
	first := wa.next()
	if first.key != "u" {
		t.Fatalf("a connection of listener 1 went with key %q, want u", first.key)
	}
	wa.answer(first, false) // refused: it goes to b, for the same listener
	if c := wb.next(); c.key != "u" {
		t.Fatalf("the refused connection went to the other worker with key %q, want u", c.key)
	} else {
		wb.answer(c, true)
	}
	h.dispatch(fds[1:], []ipc.Peer{{}}, new(batch))
	var c newconn
	select {
	case m := <-wa.msgs:
		wa.msgs <- m
		c = wa.next()
		defer wa.answer(c, true)
	case m := <-wb.msgs:
		wb.msgs <- m
		c = wb.next()
		defer wb.answer(c, true)
	case <-time.After(5 * time.Second):
		t.Fatal("no newconn for listener 0 within 5s")
	}
	if c.key != "k" {
		t.Fatalf("a connection of listener 0 went with key %q, want k", c.key)
	}
}

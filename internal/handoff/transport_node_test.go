package handoff

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/nodeipc"
)

// nodeStandIn is a Go stand-in for a Node worker's side of its channel,
// taking connections as child.js does: it answers each newconn it reads.
type nodeStandIn struct {
	t      *testing.T
	ch     *nodeipc.Channel
	unread int                  // a duplicate of its end, for SIOCINQ; -1: none
	msgs   chan nodeipc.Message // what it reads, until the channel ends
}

// written reports whether bytes wait unread on the worker's end.
func (w *nodeStandIn) written() bool {
	n, err := unix.IoctlGetInt(w.unread, unix.SIOCINQ)
	return err == nil && n > 0
}

// read is the stand-in's one reader (Recv takes one at a time).
func (w *nodeStandIn) read() {
	defer close(w.msgs)
	for {
		m, err := w.ch.Recv()
		if err != nil {
			return
		}
		w.msgs <- m
	}
}

// newconn is one connection the stand-in was handed.
type newconn struct {
	seq int64
	key string
	fd  int // the worker's copy; closed by answer
}

// nodeTestTarget makes a Node worker target listening on key "k", with its
// Worker's events passed to h as the link's reader does, and returns it
// with the worker's side. wait waits until the reader has stopped.
func nodeTestTarget(t *testing.T, h *Handoff, id int) (tg *Target, w *nodeStandIn, wait func()) {
	t.Helper()
	tg, w, wait = newNodeTestTarget(t, h, id, false)
	go w.read()
	return tg, w, wait
}

// stoppedNodeTestTarget is nodeTestTarget with a worker that reads nothing
// from its channel, as a stopped process or a blocked event loop, until
// the test starts its read; its written reports what waits for it.
func stoppedNodeTestTarget(t *testing.T, h *Handoff, id int) (tg *Target, w *nodeStandIn, wait func()) {
	t.Helper()
	return newNodeTestTarget(t, h, id, true)
}

func newNodeTestTarget(t *testing.T, h *Handoff, id int, stopped bool) (tg *Target, w *nodeStandIn, wait func()) {
	t.Helper()
	ch, remote, err := nodeipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	unread := -1
	if stopped {
		// A descriptor of the worker's end that its Channel does not
		// read, to see what waits in it (SIOCINQ).
		if unread, err = unix.FcntlInt(remote.Fd(), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			t.Fatal(err)
		}
	}
	peer, err := nodeipc.NewChannel(remote)
	if err != nil {
		if unread >= 0 {
			unix.Close(unread)
		}
		t.Fatal(err)
	}
	events := make(chan nodeipc.Event, 16)
	nw := nodeipc.NewWorker(ch, events)
	tg = NewNodeTarget(id)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range events {
			switch v := ev.Value.(type) {
			case nodeipc.Accepted:
				NodeOf(tg).Answered(h, -1, false)
			case nodeipc.Refused:
				NodeOf(tg).Answered(h, v.FD, !v.Gone)
			case nodeipc.Disconnected:
				return
			}
		}
	}()
	// Every descriptor of the worker's end closed, the Worker sees EOF.
	t.Cleanup(func() {
		peer.Close()
		if unread >= 0 {
			unix.Close(unread)
		}
		wg.Wait()
		nw.Close()
	})
	NodeOf(tg).Listen(h, nw, 0, "k")
	h.policy.Add(tg)
	w = &nodeStandIn{t: t, ch: peer, unread: unread, msgs: make(chan nodeipc.Message, 2*maxNodeUntaken)}
	return tg, w, wg.Wait
}

// next reads the next newconn, failing after a deadline.
func (w *nodeStandIn) next() newconn {
	w.t.Helper()
	var m nodeipc.Message
	select {
	case m = <-w.msgs:
	case <-time.After(5 * time.Second):
		w.t.Fatal("no newconn within 5s")
	}
	var c struct {
		Act string `json:"act"`
		Key string `json:"key"`
		Seq int64  `json:"seq"`
	}
	if err := json.Unmarshal(m.Body, &c); err != nil || c.Act != "newconn" || m.FD < 0 {
		w.t.Fatalf("worker got %q (%s) with fd %d, want a newconn with a connection", m.Body, m.Cmd, m.FD)
	}
	return newconn{seq: c.Seq, key: c.Key, fd: m.FD}
}

// answer says whether the worker took c, as child.js onconnection does.
func (w *nodeStandIn) answer(c newconn, accepted bool) {
	w.t.Helper()
	unix.Close(c.fd)
	if err := w.ch.Send(map[string]any{"cmd": "NODE_CLUSTER", "ack": c.seq, "accepted": accepted, "seq": 0}, -1); err != nil {
		w.t.Fatal(err)
	}
}

// none checks that the worker is handed nothing (more) for a moment.
func (w *nodeStandIn) none(what string) {
	w.t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			return // the channel ended: nothing more can come
		}
		w.t.Fatalf("%s: worker got %s", what, m.Body)
	case <-time.After(100 * time.Millisecond): // the absence of a message
	}
}

// Node workers take connections one newconn each, in turn; the supervisor
// closes its copy once the worker answers that it took it, and until then
// counts it as the worker's load.
func TestHandoffNodeTakesTurns(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	a, wa, _ := nodeTestTarget(t, h, 1)
	b, wb, _ := nodeTestTarget(t, h, 2)
	before := fdtest.Open(t)
	fds := pipeFDs(t, 4)
	for _, fd := range fds {
		h.dispatch([]int{fd}, nil, new(batch))
	}
	var got []newconn
	for i := range 4 {
		c := []*nodeStandIn{wa, wb}[i%2].next()
		if c.key != "k" {
			t.Fatalf("newconn for key %q, want k", c.key)
		}
		got = append(got, c)
	}
	if a.Load() != 2 || b.Load() != 2 {
		t.Fatalf("loads %d %d before any answer, want 2 2", a.Load(), b.Load())
	}
	for i, c := range got {
		[]*nodeStandIn{wa, wb}[i%2].answer(c, true)
	}
	until(t, 5*time.Second, "answers counted", func() bool { return a.Load() == 0 && b.Load() == 0 })
	if a.handed.Load() != 2 || b.handed.Load() != 2 {
		t.Fatalf("handed %d %d, want 2 2", a.handed.Load(), b.handed.Load())
	}
	until(t, 5*time.Second, "every copy of the connections closed", func() bool { return fdtest.Open(t) == before })
}

// A refused connection (the worker is closing its server) goes to another
// worker.
func TestHandoffNodeRefusedGoesElsewhere(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	a, wa, _ := nodeTestTarget(t, h, 1)
	_, wb, _ := nodeTestTarget(t, h, 2)
	h.dispatch(pipeFDs(t, 1), nil, new(batch))
	c := wa.next()
	wa.answer(c, false)
	wb.answer(wb.next(), true)
	until(t, 5*time.Second, "the refusal counted", func() bool { return a.Load() == 0 && a.returned.Load() == 1 })
	if n := h.retried.Load(); n != 1 {
		t.Fatalf("retried %d, want 1", n)
	}
	// handed is a Prometheus counter (handoffs_total): it must not go down.
	if n := a.handed.Load(); n != 1 {
		t.Fatalf("a's handoffs counted %d after the refusal, want still 1", n)
	}
}

// A worker that does not answer gets maxNodeUntaken connections, and the
// rest go to another.
func TestHandoffNodeCapsUntaken(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	h.oneCPU = true // a burst goes whole to one worker: a
	a, wa, _ := nodeTestTarget(t, h, 1)
	b, wb, _ := nodeTestTarget(t, h, 2)
	h.dispatch(pipeFDs(t, maxNodeUntaken+3), nil, new(batch))
	for range 3 {
		wb.answer(wb.next(), true)
	}
	if n := a.handed.Load(); n != maxNodeUntaken {
		t.Fatalf("a unanswering worker was handed %d, want %d", n, maxNodeUntaken)
	}
	if a.Available() {
		t.Fatal("a worker at its cap is still available")
	}
	// Its answers make room again.
	var got []newconn
	for range maxNodeUntaken {
		got = append(got, wa.next())
	}
	for _, c := range got {
		wa.answer(c, true)
	}
	until(t, 5*time.Second, "a available again", func() bool { return a.Available() && b.Load() == 0 })
}

// A worker that exits before answering loses nothing: what it received and
// what still waited in the supervisor's send queue go to another worker,
// whether the channel's end reports them or the exit reclaims them first.
func TestHandoffNodeExitLosesNothing(t *testing.T) {
	for _, how := range []string{"end", "reclaim"} {
		t.Run(how, func(t *testing.T) {
			h, _ := newTestHandoff(16, time.Minute)
			h.oneCPU = true
			a, wa, wait := nodeTestTarget(t, h, 1)
			_, wb, _ := nodeTestTarget(t, h, 2)
			h.dispatch(pipeFDs(t, 3), nil, new(batch))
			c := wa.next() // received, not answered; two more wait for its ACK
			unix.Close(c.fd)
			if how == "reclaim" {
				if n := h.Recover(a); n != 3 {
					t.Fatalf("recover = %d, want 3", n)
				}
			}
			wa.ch.Close() // the worker is gone
			wait()
			if h.policy.Len() != 1 || a.fails.Load() != 0 {
				t.Fatalf("%d members, a backed off %d times; want b alone, and a gone, not paused", h.policy.Len(), a.fails.Load())
			}
			for range 3 {
				wb.answer(wb.next(), true)
			}
			wb.none("after the three")
			if n := h.Recover(a); n != 0 {
				t.Fatalf("recover after everything was handed on = %d, want 0", n)
			}
			if a.Load() != 0 || a.handed.Load() != 3 || a.returned.Load() != 3 {
				t.Fatalf("a's load %d, handed %d, returned %d; want 0, 3 and 3", a.Load(), a.handed.Load(), a.returned.Load())
			}
		})
	}
}

// A worker whose server does not listen (yet, or any more) is handed
// nothing: connections wait in the queue.
func TestHandoffNodeNotListening(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	a, wa, _ := nodeTestTarget(t, h, 1)
	NodeOf(a).ServerClosed(h, "other") // not its key: no change
	h.dispatch(pipeFDs(t, 1), nil, new(batch))
	wa.answer(wa.next(), true)
	NodeOf(a).ServerClosed(h, "k")
	h.dispatch(pipeFDs(t, 1), nil, new(batch))
	wa.none("after its server closed")
	if n := h.npend.Load(); n != 1 {
		t.Fatalf("%d queued, want 1", n)
	}
	a.mu.Lock()
	w := NodeOf(a).w
	a.mu.Unlock()
	NodeOf(a).Listen(h, w, 0, "k2")
	if c := wa.next(); c.key != "k2" {
		t.Fatalf("queued connection handed for key %q, want k2", c.key)
	}
}

// Under least-conn a Node worker's load is what it has not answered: one
// that keeps up gets the next connections, while one that sits on a
// connection gets none.
func TestHandoffNodeLeastConn(t *testing.T) {
	h, _ := New("least-conn", zap.NewNop(), 16, time.Minute)
	a, wa, _ := nodeTestTarget(t, h, 1)
	b, wb, _ := nodeTestTarget(t, h, 2)
	h.dispatch(pipeFDs(t, 1), nil, new(batch))
	h.dispatch(pipeFDs(t, 1), nil, new(batch))
	held := wa.next() // a sits on it
	defer unix.Close(held.fd)
	for i := range 5 {
		c := wb.next()
		wb.answer(c, true)
		until(t, 5*time.Second, "b's answer counted", func() bool { return b.Load() == 0 })
		if i < 4 {
			h.dispatch(pipeFDs(t, 1), nil, new(batch))
		}
	}
	wa.none("while it sits on a connection")
	if a.Load() != 1 {
		t.Fatalf("a's load %d, want 1", a.Load())
	}
}

// A worker that refuses (at maxConnections, say) is given a pause before
// it is handed a connection again, even when it is the only one.
func TestHandoffNodeRefusalBacksOff(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	_, wa, _ := nodeTestTarget(t, h, 1)
	h.dispatch(pipeFDs(t, 1), nil, new(batch))
	wa.answer(wa.next(), false)
	refused := time.Now()
	c := wa.next() // the same connection, again
	if d := time.Since(refused); d < backoffMin {
		t.Fatalf("handed again %v after the refusal, want at least %v", d, backoffMin)
	}
	wa.answer(c, true)
	wa.none("after it took the connection")
}

// A worker that stops reading its channel (SIGSTOP, an event loop blocked
// by a long synchronous handler) holds the one connection written to it;
// those still waiting behind it in the supervisor's send queue, which it
// has never seen, go to another worker once it has stalled, not when it
// resumes. On resuming it gets only the one it was written.
func TestHandoffNodeStalledGivesBackQueued(t *testing.T) {
	h, _ := newTestHandoff(16, time.Minute)
	h.oneCPU = true // the burst goes whole to a
	a, wa, _ := stoppedNodeTestTarget(t, h, 1)
	b, wb, _ := nodeTestTarget(t, h, 2)
	before := fdtest.Open(t)
	h.dispatch(pipeFDs(t, 5), nil, new(batch))
	if n := a.handed.Load(); n != 5 {
		t.Fatalf("a was handed %d, want the burst of 5", n)
	}
	// The first is written at once; the rest wait for the worker to
	// acknowledge it.
	until(t, 5*time.Second, "the first newconn written to a", wa.written)
	now := time.Now()
	h.Check(now)
	h.Check(now.Add(stallAfter))
	if a.off.Load()&offStalled == 0 {
		t.Fatal("a worker that answered nothing for stallAfter is not stalled")
	}
	var got []newconn
	for range 4 {
		got = append(got, wb.next())
	}
	for _, c := range got {
		wb.answer(c, true)
	}
	wb.none("after the four queued behind a's")
	until(t, 5*time.Second, "b's answers counted", func() bool { return b.Load() == 0 })
	if a.Load() != 1 || a.returned.Load() != 4 {
		t.Fatalf("a's load %d, returned %d; want the one written to it, and 4", a.Load(), a.returned.Load())
	}
	go wa.read() // it resumes
	c := wa.next()
	wa.none("after the one it was written")
	wa.answer(c, true)
	until(t, 5*time.Second, "a's answer counted", func() bool { return a.Load() == 0 })
	h.Check(now.Add(2 * stallAfter))
	if !a.Available() {
		t.Fatalf("a is not back in rotation after it moved (off %#x)", a.off.Load())
	}
	if n := h.recovered.Load(); n != 4 {
		t.Fatalf("recovered %d, want 4", n)
	}
	until(t, 5*time.Second, "every copy of the connections closed", func() bool { return fdtest.Open(t) == before })
}

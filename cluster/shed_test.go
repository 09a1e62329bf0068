package cluster

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// silentConns registers n connections with s, accepted a millisecond apart
// from t0, and returns their clients and server sides, oldest first.
func silentConns(t *testing.T, s *silentSet, n int, t0 time.Time) ([]net.Conn, []*handedConn) {
	t.Helper()
	clients := make([]net.Conn, n)
	conns := make([]*handedConn, n)
	for i := range n {
		clients[i], conns[i] = handedPair(t)
		conns[i].since = t0.Add(time.Duration(i) * time.Millisecond)
		s.add(conns[i])
	}
	return clients, conns
}

// isShed reports whether shed closed c.
func isShed(c *handedConn) bool {
	_, err := c.Write([]byte("x"))
	return c.state.Load() == connShed && errors.Is(err, net.ErrClosed)
}

// Only connections that have sent nothing are shed, oldest first, never
// more than asked, never one accepted after the cutoff.
func TestShedSilentOldestFirst(t *testing.T) {
	var s silentSet
	t0 := time.Unix(1000, 0)
	clients, conns := silentConns(t, &s, 6, t0)

	// 0 sent a request and the application read it; 1 sent one not read
	// yet; 2 was closed by the application.
	clients[0].Write([]byte("GET"))
	if _, err := io.ReadFull(conns[0], make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	clients[1].Write([]byte("GET"))
	waitQueued(t, conns[1])
	conns[2].Close()

	// Asked for 2 with a cutoff after all but the last: 3 and 4.
	n, oldest := s.shed(2, t0.Add(4*time.Millisecond))
	if n != 2 || !isShed(conns[3]) || !isShed(conns[4]) {
		t.Fatalf("shed %d; want 3 and 4 (states %v)", n, states(conns))
	}
	for _, i := range []int{0, 1, 2, 5} {
		if conns[i].state.Load() == connShed {
			t.Errorf("connection %d shed: it spoke, was closed, or is too young", i)
		}
	}
	if want := conns[5].since; !oldest.Equal(want) {
		t.Errorf("oldest silent left: have %v, want %v", oldest, want)
	}
	// Its client sees the close.
	clients[3].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[3].Read(make([]byte, 1)); err == nil {
		t.Error("client of a shed connection read data, want EOF or reset")
	}

	// The last is too young for the cutoff; later it is not.
	if n, _ := s.shed(10, t0.Add(4*time.Millisecond)); n != 0 {
		t.Fatalf("shed %d connections younger than the cutoff", n)
	}
	n, oldest = s.shed(10, t0.Add(time.Second))
	if n != 1 || !isShed(conns[5]) || !oldest.IsZero() {
		t.Fatalf("shed %d (oldest %v); want the last one and none left", n, oldest)
	}
	if s.total.Load() != 3 {
		t.Errorf("total %d, want 3", s.total.Load())
	}
}

// waitQueued polls until bytes wait in c's receive queue.
func waitQueued(t *testing.T, c *handedConn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.quiet(); {
		if time.Now().After(deadline) {
			t.Fatal("bytes sent by the client never arrived")
		}
		time.Sleep(time.Millisecond)
	}
}

func states(conns []*handedConn) []uint32 {
	var s []uint32
	for _, c := range conns {
		s = append(s, c.state.Load())
	}
	return s
}

// The set does not grow with connections that are no longer silent.
func TestSilentSetCompacts(t *testing.T) {
	var s silentSet
	for range 10_000 {
		c := &handedConn{}
		c.state.Store(connHeard)
		s.add(c)
	}
	if len(s.q) > 64 {
		t.Fatalf("%d entries held for 10,000 connections that all spoke", len(s.q))
	}
}

// An rr worker sheds only while paused, down to the level at which it
// resumes, and the closes resume it.
func TestRelievePause(t *testing.T) {
	w := &worker{}
	var sent []ipc.Type
	w.gate = &pauseGate{high: 5, low: 2, top: 100,
		conns: func() int { return int(w.accepted.Load() - w.closed.Load()) },
		send:  func(typ ipc.Type) error { sent = append(sent, typ); return nil },
	}
	t0 := time.Now().Add(-time.Minute)
	_, conns := silentConns(t, &w.silent, 6, t0)
	for _, c := range conns {
		c.w = w
	}
	w.accepted.Store(6)

	if c := w.relievePause(time.Now()); c != nil || w.silent.total.Load() != 0 {
		t.Fatalf("not paused: shed %d", w.silent.total.Load())
	}
	w.gate.update(0) // 6 open: pause
	if len(sent) != 1 || sent[0] != ipc.TypePause {
		t.Fatalf("sent %v, want a pause", sent)
	}
	if c := w.relievePause(time.Now()); c != nil {
		t.Error("nothing left to wait for, yet a timer")
	}
	if have := w.silent.total.Load(); have != 4 {
		t.Fatalf("shed %d; want 4, down to the resume level 2", have)
	}
	if !isShed(conns[0]) || !isShed(conns[3]) || conns[4].state.Load() == connShed {
		t.Errorf("not the oldest shed: %v", states(conns))
	}
	if len(sent) != 2 || sent[1] != ipc.TypeResume || w.gate.paused.Load() {
		t.Errorf("sent %v; want pause, resume", sent)
	}
}

// Paused with young silent connections only, the worker sheds nothing yet
// and asks to look again once the oldest has been silent for shedAfter.
func TestRelievePauseWaitsForAge(t *testing.T) {
	w := &worker{}
	w.gate = &pauseGate{high: 1, low: 0, top: 100,
		conns: func() int { return int(w.accepted.Load() - w.closed.Load()) },
		send:  func(ipc.Type) error { return nil },
	}
	now := time.Now()
	silentConns(t, &w.silent, 2, now)
	w.accepted.Store(2)
	w.gate.update(0)
	c := w.relievePause(now)
	if c == nil || w.silent.total.Load() != 0 {
		t.Fatalf("shed %d young connections, or no timer (%v)", w.silent.total.Load(), c)
	}
}

// A worker without room for a full frame waits (and pauses) before it
// receives another; a close that makes room wakes it.
func TestWaitRoom(t *testing.T) {
	var open atomic.Int64
	open.Store(100 - ipc.MaxFDs)
	g := &pauseGate{high: 20, low: 10, top: 100, room: make(chan struct{}, 1),
		conns: func() int { return int(open.Load()) },
		send:  func(ipc.Type) error { return nil },
	}
	stop, closed := make(chan struct{}), make(chan struct{})
	if !g.waitRoom(stop, closed) {
		t.Fatal("a full frame fits: no wait")
	}
	open.Add(1)
	done := make(chan bool)
	go func() { done <- g.waitRoom(stop, closed) }()
	// It pauses before it waits (the supervisor may still be sending).
	for deadline := time.Now().Add(5 * time.Second); !g.paused.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("waiting for room without a pause")
		}
	}
	select {
	case <-done:
		t.Fatal("received with no room for a full frame")
	default:
	}
	// A close (update runs in Close) makes room.
	open.Add(-1)
	g.update(0)
	if ok := <-done; !ok {
		t.Fatal("waitRoom reported stop")
	}
	open.Add(1)
	go func() { done <- g.waitRoom(stop, closed) }()
	close(stop)
	if ok := <-done; ok {
		t.Fatal("stopped while waiting, yet reported room")
	}
	var nilGate *pauseGate
	if !nilGate.waitRoom(stop, closed) {
		t.Fatal("no gate: never waits")
	}
}

package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAbusiveClients puts the real server, with its default limits, under
// clients that misbehave at once: event subscribers that never read,
// clients that send garbage or nothing, and a 50 MB line without a newline.
// A status request is still answered within a second, the long line is
// refused after MaxRequestLine without being buffered, and once the clients
// leave the server is back to the goroutines and fds it had before.
func TestAbusiveClients(t *testing.T) {
	checkLeaks(t)
	const (
		subscribers = 50
		idlers      = 150 // connect and say nothing
		garblers    = 150 // send garbage, some without a newline
		longLine    = 50 << 20
	)
	var bus Broadcaster
	_, path := serve(t, statusHandler(testStatus), &bus)
	baseGoroutines, baseFDs := len(leakedGoroutines()), newFDs(t, nil)

	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dial with %d clients connected: %v", len(clients), err)
		}
		clients = append(clients, c)
		return c
	}
	statusWithin := func(d time.Duration, when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		if r, err := Call(ctx, path, Request{Cmd: CmdStatus}); err != nil || !r.OK || r.Status == nil {
			t.Fatalf("status %s: %+v, %v; want an answer within %v", when, r, err, d)
		}
	}

	for range subscribers {
		dial().Write([]byte(`{"cmd":"events"}` + "\n"))
	}
	waitSubscribers(t, &bus, subscribers)

	for i := range idlers + garblers {
		c := dial()
		if i >= idlers {
			c.Write([]byte(fmt.Sprintf("garbage %d \x00\xff", i) + strings.Repeat("\n", i%2)))
		}
	}
	statusWithin(time.Second, fmt.Sprintf("with %d more clients idle or talking garbage", idlers+garblers))

	// The long line, while a status request is made.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before) // nothing else allocates much now
	c := dial()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	wrote, werr := 0, error(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		for wrote < longLine && werr == nil {
			var n int
			n, werr = c.Write(chunk)
			wrote += n
		}
	})
	statusWithin(time.Second, "while a client sends a 50 MB line")
	wg.Wait()
	runtime.ReadMemStats(&after)
	if werr == nil || errors.Is(werr, os.ErrDeadlineExceeded) {
		t.Errorf("the server took all %d bytes of the long line (%v); want it refused after %d", wrote, werr, MaxRequestLine)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("%d MB allocated while a %d MB line was sent; want it not buffered", grew>>20, longLine>>20)
	}
	if answer := readAll(t, c); !strings.Contains(answer, fmt.Sprintf("longer than %d bytes", MaxRequestLine)) {
		t.Errorf("answer to the long line: %q", answer)
	}

	// Then to the subscribers that do not read, enough to fill their
	// socket buffers and queues: Publish must not wait for any of them.
	// (Last, because encoding events for fifty allocates more than the
	// check above allows.)
	published := make(chan struct{})
	go func() {
		defer close(published)
		big := strings.Repeat("x", 1024)
		for i := range 4 * SubscriberBuffer {
			bus.Publish(Event{Kind: EventMessage, PID: i, Msg: big})
		}
	}()
	recv(t, published, "end of Publish to subscribers that do not read")
	statusWithin(time.Second, "with 50 subscribers that do not read")

	for _, c := range clients {
		c.Close()
	}
	clients = nil
	waitSubscribers(t, &bus, 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		gs, fds := len(leakedGoroutines()), newFDs(t, baseFDs)
		if gs <= baseGoroutines && len(fds) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the clients left: %d goroutines (was %d), new fds %v", gs, baseGoroutines, fds)
		}
		time.Sleep(5 * time.Millisecond) // poll, with a deadline
	}
	statusWithin(time.Second, "after the clients left")
}

// waitSubscribers waits until b has n subscriptions.
func waitSubscribers(t *testing.T, b *Broadcaster, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.subscribers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions, want %d", b.subscribers(), n)
		}
		time.Sleep(time.Millisecond) // poll, with a deadline
	}
}

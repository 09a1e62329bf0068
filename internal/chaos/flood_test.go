package chaos

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// headerTimeout is the demo worker's ReadHeaderTimeout
// (internal/demo/server.go): it closes a connection that has not sent its
// headers within it.
const headerTimeout = 5 * time.Second

// TestIdleFlood opens thousands of connections that never send a byte,
// with and without a 256-descriptor limit on the supervisor and workers: a
// new client is still served, the idle ones are closed by the header
// timeout, nothing exits, and service is back within a second of the
// flood's end. The subtests wait mostly on timers, so they run in parallel.
func TestIdleFlood(t *testing.T) {
	for _, mode := range modes {
		for _, limited := range []bool{false, true} {
			name := mode
			if limited {
				name += "/nofile256"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				flood(t, mode, limited)
			})
		}
	}
}

func flood(t *testing.T, mode string, limited bool) {
	const workers = 2
	n := pick(300, 2000)
	o := opts{mode: mode, workers: workers}
	// Served within a second; under the limit, the workers can take a new
	// client only once the header timeout has freed descriptors.
	serveWithin := time.Second
	scenario := "flood"
	if limited {
		// util-linux prlimit sets the limit and execs: same pid.
		o.wrapper = []string{"prlimit", "--nofile=256:256", "--"}
		serveWithin = headerTimeout + 3*time.Second
		scenario = "flood-nofile256"
		n = pick(600, 2000) // more than the workers' limits together
	}
	s := start(t, o)
	before := keys(s.workers())

	idle, dialFailed := dialIdle(s.addr, n)
	// Every idle connection waits for the server to close it. Under the
	// limit the backlog is taken a few hundred at a time, each batch held
	// for the header timeout.
	closeWithin := headerTimeout + 3*time.Second
	if limited {
		closeWithin = time.Duration(n/(workers*200)+1)*headerTimeout + 5*time.Second
	}
	closed := watchClosed(idle, closeWithin)

	t0 := time.Now()
	_, err := get(s.addr, "/pid", serveWithin)
	var served any = time.Since(t0)
	if err != nil {
		served = "failed"
		t.Errorf("a new client during the flood was not served within %s: %v", serveWithin, err)
	}
	open, maxClose := closed()
	end := time.Now()
	back, err := firstSuccess(s.addr, 2*time.Second)
	if err != nil {
		t.Errorf("service not back after the flood: %v", err)
	}
	after := keys(s.workers())
	figure(t, scenario, mode, "idle", n, "dial_failed", dialFailed, "new_client_served", served,
		"idle_closed_max", maxClose, "idle_left_open", open, "back_after_flood", back,
		"workers_replaced", !slices.Equal(before, after))
	if open > 0 {
		t.Errorf("%d of %d idle connections still open %s after they were made", open, len(idle), closeWithin)
	}
	if back > time.Second {
		t.Errorf("service back %s after the flood ended at %s, more than a second", back, end.Format("15:04:05.000"))
	}
	if !slices.Equal(before, after) {
		t.Errorf("workers changed during the flood: %v -> %v", before, after)
	}
	s.stop()
}

// dialIdle opens up to n connections to addr, 50 at a time, that send
// nothing, and returns them and how many could not be made.
func dialIdle(addr string, n int) ([]net.Conn, int) {
	var mu sync.Mutex
	var conns []net.Conn
	failed := 0
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	return conns, failed
}

// watchClosed reads from each connection until the server closes it or d
// passes. The returned function waits for that and reports how many were
// still open (they are closed now) and how long the slowest close took.
func watchClosed(conns []net.Conn, d time.Duration) func() (open int, slowest time.Duration) {
	t0 := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var open int
	var slowest time.Duration
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetReadDeadline(t0.Add(d))
			_, err := c.Read(make([]byte, 1))
			mu.Lock()
			defer mu.Unlock()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
				return
			}
			slowest = max(slowest, time.Since(t0))
		}()
	}
	return func() (int, time.Duration) {
		wg.Wait()
		return open, slowest
	}
}

// firstSuccess polls GET /pid until one succeeds or d passes, and returns
// how long it took.
func firstSuccess(addr string, d time.Duration) (time.Duration, error) {
	t0 := time.Now()
	var err error
	for time.Since(t0) < d {
		if _, err = get(addr, "/pid", 500*time.Millisecond); err == nil {
			return time.Since(t0), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(t0), err
}

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// kaClient is a keep-alive client that POSTs on one TCP connection, does
// not retry, and counts its own connects: a new one only after a failure
// or a Connection: close.
type kaClient struct {
	addr     string
	connects atomic.Int64
	answered atomic.Int64
	failed   atomic.Int64
	mu       sync.Mutex
	lastPID  int
	errs     []string
}

var kaRequest = []byte("POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")

// run sends requests until stop is closed.
func (k *kaClient) run(stop <-chan struct{}) {
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if c == nil {
			k.connects.Add(1)
			var err error
			if c, err = net.Dial("tcp", k.addr); err != nil {
				k.fail(err)
				c = nil
				continue
			}
			br = bufio.NewReader(c)
		}
		pid, closing, err := k.post(c, br)
		if err != nil {
			k.fail(err)
			c.Close()
			c = nil
			continue
		}
		k.answered.Add(1)
		k.mu.Lock()
		k.lastPID = pid
		k.mu.Unlock()
		if closing {
			c.Close()
			c = nil
		}
		// Paced, so that the supervisor's steps are not starved of the
		// CPU: the workload, not a wait.
		time.Sleep(2 * time.Millisecond)
	}
}

// post sends one request on c and reads its answer: the worker's pid, and
// whether the server closes the connection after it.
func (k *kaClient) post(c net.Conn, br *bufio.Reader) (int, bool, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(kaRequest); err != nil {
		return 0, false, err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return 0, false, err
	}
	if res.StatusCode != 200 {
		return 0, false, fmt.Errorf("status %d: %q", res.StatusCode, b)
	}
	pid, err := strconv.Atoi(string(b))
	return pid, res.Close, err
}

func (k *kaClient) fail(err error) {
	k.failed.Add(1)
	k.mu.Lock()
	if len(k.errs) < 5 {
		k.errs = append(k.errs, err.Error())
	}
	k.mu.Unlock()
}

// Keep-alive clients sending POSTs, which no client retries, through
// reloads and a scale up and down: every request is answered and no
// client has to open another connection, because the draining workers
// hand their idle connections back and the new workers answer on them.
func TestKeepAliveConnectionsMove(t *testing.T) {
	s := startReady(t, "-workers", "2")
	const n = 16
	clients := make([]*kaClient, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = &kaClient{addr: s.addr}
		wg.Add(1)
		go func() { defer wg.Done(); clients[i].run(stop) }()
	}
	// answeredSince reports whether every client has min more answers
	// than base (or has failed, which the end reports).
	answeredSince := func(base []int64, min int64) func() bool {
		return func() bool {
			for i, k := range clients {
				if k.answered.Load() < base[i]+min && k.failed.Load() == 0 {
					return false
				}
			}
			return true
		}
	}
	proctest.Eventually(t, 10*time.Second, "every client is answered", answeredSince(make([]int64, n), 1))
	steps := [][]string{{"reload"}, {"scale", "3"}, {"scale", "2"}}
	for _, step := range steps {
		t0 := time.Now()
		out, code := s.ctl(step...)
		t.Logf("ctl %v: %v", step, time.Since(t0))
		if code != 0 {
			t.Fatalf("ctl %v: %d %s", step, code, out)
		}
	}
	// Every client's next answers come from the workers left.
	var base []int64
	for _, k := range clients {
		base = append(base, k.answered.Load())
	}
	proctest.Eventually(t, 10*time.Second, "every client is answered after the last step", answeredSince(base, 3))
	close(stop)
	wg.Wait()
	live := s.waitPIDs(2)
	for i, k := range clients {
		if f := k.failed.Load(); f != 0 {
			t.Errorf("client %d: %d requests failed: %v", i, f, k.errs)
		}
		if c := k.connects.Load(); c != 1 {
			t.Errorf("client %d opened %d connections, want 1", i, c)
		}
		if !live[k.lastPID] {
			t.Errorf("client %d: last answered by pid %d, not one of the workers left %v", i, k.lastPID, live)
		}
	}
}

// After a scale-up the supervisor moves idle keep-alive connections from
// the busy workers to the new ones (least-conn: until each holds about an
// even share); with -rebalance=false the new ones get none.
func TestRebalanceAfterScaleUp(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("rebalance=%v", on), func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-balance", "least-conn", fmt.Sprintf("-rebalance=%v", on))
			const n = 16
			stop := make(chan struct{})
			var wg sync.WaitGroup
			clients := make([]*kaClient, n)
			for i := range clients {
				clients[i] = &kaClient{addr: s.addr}
				wg.Add(1)
				go func() { defer wg.Done(); clients[i].run(stop) }()
			}
			defer func() { close(stop); wg.Wait() }()
			proctest.Eventually(t, 10*time.Second, "the clients are connected", func() bool {
				open := int64(0)
				for _, w := range s.status().Workers {
					open += w.OpenConns
				}
				return open == n
			})
			if out, code := s.ctl("scale", "4"); code != 0 {
				t.Fatalf("ctl scale 4: %d %s", code, out)
			}
			least := func() int64 {
				least := int64(n)
				for _, w := range s.status().Workers {
					least = min(least, w.OpenConns)
				}
				return least
			}
			if on {
				// An even share is 4; within one of it.
				proctest.Eventually(t, 10*time.Second, "every worker holds 3 connections or more", func() bool { return least() >= 3 })
			} else if proctest.Poll(2*time.Second, func() bool { return least() > 0 }) {
				t.Fatalf("a new worker got a connection without rebalancing: %+v", s.status().Workers)
			}
			for i, k := range clients {
				if f, c := k.failed.Load(), k.connects.Load(); f != 0 || c != 1 {
					t.Errorf("client %d: %d failed, %d connections: %v", i, f, c, k.errs)
				}
			}
		})
	}
}

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
	byPID    map[int]int64 // answers by the worker's pid
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
		if k.byPID == nil {
			k.byPID = map[int]int64{}
		}
		k.byPID[pid]++
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

// kaClients are n keep-alive clients of addr, running until the test ends.
type kaClients []*kaClient

func startKeepAlive(t *testing.T, addr string, n int) kaClients {
	clients := make(kaClients, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = &kaClient{addr: addr}
		wg.Add(1)
		go func() { defer wg.Done(); clients[i].run(stop) }()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
	return clients
}

// answered is the clients' answers so far, one count per client.
func (cs kaClients) answered() []int64 {
	var n []int64
	for _, k := range cs {
		n = append(n, k.answered.Load())
	}
	return n
}

// answeredSince reports whether every client has min more answers than
// base (or has failed, which check reports).
func (cs kaClients) answeredSince(base []int64, min int64) func() bool {
	return func() bool {
		for i, k := range cs {
			if k.answered.Load() < base[i]+min && k.failed.Load() == 0 {
				return false
			}
		}
		return true
	}
}

// byPID is the answers so far by the worker's pid, over all clients.
func (cs kaClients) byPID() map[int]int64 {
	sum := map[int]int64{}
	for _, k := range cs {
		k.mu.Lock()
		for pid, n := range k.byPID {
			sum[pid] += n
		}
		k.mu.Unlock()
	}
	return sum
}

// check fails t for any failed request, and for a client that opened more
// than one connection.
func (cs kaClients) check(t *testing.T) {
	t.Helper()
	failed, connects := int64(0), int64(0)
	for i, k := range cs {
		failed += k.failed.Load()
		connects += k.connects.Load()
		if f, c := k.failed.Load(), k.connects.Load(); f != 0 || c != 1 {
			t.Errorf("client %d: %d failed, %d connections: %v", i, f, c, k.errs)
		}
	}
	t.Logf("%d clients: %d failed, %d connections opened", len(cs), failed, connects)
}

// shareWindow is how long a share of requests is measured over.
const shareWindow = time.Second

// shares polls, until d has passed, the share of the clients' requests
// each worker answered over the last shareWindow, and returns the time
// from now at which every one of want workers first answered between lo
// and hi of them (negative if never), and the shares of the last window.
func (cs kaClients) shares(d time.Duration, want int, lo, hi float64) (time.Duration, map[int]float64) {
	type sample struct {
		at time.Time
		n  map[int]int64
	}
	t0 := time.Now()
	samples := []sample{{t0, cs.byPID()}}
	var last map[int]float64
	for time.Since(t0) < d {
		time.Sleep(50 * time.Millisecond) // a sampling period, not a wait for an event
		now := sample{time.Now(), cs.byPID()}
		samples = append(samples, now)
		old := samples[0]
		for _, s := range samples {
			if now.at.Sub(s.at) >= shareWindow {
				old = s
			}
		}
		if now.at.Sub(old.at) < shareWindow {
			continue
		}
		total := int64(0)
		for pid, n := range now.n {
			total += n - old.n[pid]
		}
		last = map[int]float64{}
		ok := total > 0
		for pid, n := range now.n {
			if n > old.n[pid] {
				last[pid] = float64(n-old.n[pid]) / float64(total)
				ok = ok && last[pid] >= lo && last[pid] <= hi
			}
		}
		if ok && len(last) == want {
			return now.at.Sub(t0), last
		}
	}
	return -1, last
}

// rebalanced checks, after a scale to 4 workers, that each of them answers
// 20-30% of the clients' requests within 2 seconds (issue 21).
func (cs kaClients) rebalanced(t *testing.T, s *sup) {
	t.Helper()
	at, shares := cs.shares(2*time.Second, 4, 0.20, 0.30)
	if at >= 0 {
		t.Logf("after scale 4: each of 4 workers answered 20-30%% after %v: %v", at, shares)
		return
	}
	// Connections per worker tell an uneven spread of connections from
	// even connections answered at uneven rates.
	out, _ := s.ctl("status")
	t.Errorf("rebalancing: the 4 workers did not each answer 20-30%% of requests within 2s; last %v: %v; then:\n%s", shareWindow, shares, out)
}

// Keep-alive clients sending POSTs, which no client retries, through 20
// reloads and a scale 2 -> 4 -> 2: every request is answered and no client
// opens another connection, because the draining workers hand their idle
// connections back and the new workers answer on them. After the scale-up,
// rebalancing (round-robin) gives each of the 4 workers 20-30% of the
// requests within 2 seconds.
func TestKeepAliveConnectionsMove(t *testing.T) {
	s := startReady(t, "-workers", "2")
	clients := startKeepAlive(t, s.addr, 64)
	proctest.Eventually(t, 10*time.Second, "every client is answered", clients.answeredSince(make([]int64, len(clients)), 1))
	t0 := time.Now()
	for range 20 {
		if out, code := s.ctl("reload"); code != 0 {
			t.Fatalf("ctl reload: %d %s", code, out)
		}
	}
	t.Logf("20 reloads: %v", time.Since(t0))
	if out, code := s.ctl("scale", "4"); code != 0 {
		t.Fatalf("ctl scale 4: %d %s", code, out)
	}
	clients.rebalanced(t, s)
	if out, code := s.ctl("scale", "2"); code != 0 {
		t.Fatalf("ctl scale 2: %d %s", code, out)
	}
	// Every client's next answers come from the workers left.
	proctest.Eventually(t, 10*time.Second, "every client is answered after the last step", clients.answeredSince(clients.answered(), 3))
	live := s.waitPIDs(2)
	clients.check(t)
	for i, k := range clients {
		k.mu.Lock()
		pid := k.lastPID
		k.mu.Unlock()
		if !live[pid] {
			t.Errorf("client %d: last answered by pid %d, not one of the workers left %v", i, pid, live)
		}
	}
}

// After a scale-up the supervisor moves idle keep-alive connections from
// the busy workers to the new ones (least-conn here; round-robin in
// TestKeepAliveConnectionsMove); with -rebalance=false the new ones get
// none.
func TestRebalanceAfterScaleUp(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("rebalance=%v", on), func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-balance", "least-conn", fmt.Sprintf("-rebalance=%v", on))
			clients := startKeepAlive(t, s.addr, 64)
			proctest.Eventually(t, 10*time.Second, "every client is answered", clients.answeredSince(make([]int64, len(clients)), 1))
			if out, code := s.ctl("scale", "4"); code != 0 {
				t.Fatalf("ctl scale 4: %d %s", code, out)
			}
			if on {
				clients.rebalanced(t, s)
			} else if at, shares := clients.shares(2*time.Second, 3, 0, 1); at >= 0 {
				t.Errorf("a new worker answered without rebalancing: %v", shares)
			} else if len(shares) != 2 {
				t.Errorf("shares over the last %v: %v, want the 2 first workers only", shareWindow, shares)
			}
			clients.check(t)
		})
	}
}

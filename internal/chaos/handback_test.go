package chaos

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/proctest"
)

// TestHandBackLeaks hands keep-alive connections back through reloads —
// thousands of hand-backs (10,000 in the long run) — and checks that every
// request on them is answered, on the connection it started on, and that
// neither the supervisor nor the workers keep a descriptor afterwards.
func TestHandBackLeaks(t *testing.T) {
	const workers = 2
	conns, reloads := pick(250, 2500), pick(2, 4)
	s := start(t, opts{mode: "rr", workers: workers})
	s.goroutines() // the baseline counts the metrics connection the checks use
	base := s.FDs()
	workerBase := 0
	for pid := range s.workers() {
		n, err := fdtest.Count(pid)
		if err != nil {
			t.Fatal(err)
		}
		workerBase = max(workerBase, n)
	}
	clients := make([]*keepAlive, conns)
	for i := range clients {
		c, err := dialKeepAlive(s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	round := func(r int) {
		t.Helper()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.post(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("round %d: %d of %d requests failed, first: %v", r, len(errs), len(clients), errs[0])
		}
	}
	round(0)
	for r := range reloads {
		if err := s.call(control.Request{Cmd: control.CmdReload}, 60*time.Second); err != nil {
			t.Fatalf("reload: %v", err)
		}
		s.waitSettled(workers, 30*time.Second)
		round(r + 1)
	}
	handedBack := s.metric("prefork_connections_handed_back_total")
	unplaced := s.metric("prefork_connections_handed_back_unplaced_total")
	for _, c := range clients {
		c.Close()
	}
	if !proctest.Poll(10*time.Second, func() bool { return s.FDs() <= base }) {
		t.Fatalf("the supervisor's descriptors not back to their baseline: %d, then %d", base, s.FDs())
	}
	for pid := range s.workers() {
		proctest.Eventually(t, 10*time.Second, fmt.Sprintf("worker %d's descriptors back to a fresh worker's", pid), func() bool {
			n, err := fdtest.Count(pid)
			return err == nil && n <= workerBase
		})
	}
	figure(t, "handback", "rr", "connections", conns, "reloads", reloads, "handed_back", handedBack,
		"unplaced", unplaced, "supervisor_fds", fmt.Sprintf("%d/%d", base, s.FDs()))
	if handedBack < float64(conns*reloads) {
		t.Errorf("%v connections handed back, want at least %d (each moved at every reload)", handedBack, conns*reloads)
	}
	s.stop()
}

// keepAlive is one client connection that POSTs and never reconnects.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(addr string) (*keepAlive, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &keepAlive{c: c, br: bufio.NewReader(c)}, nil
}

func (k *keepAlive) post() error {
	k.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(k.c, "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"); err != nil {
		return err
	}
	res, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err == nil && (res.StatusCode != 200 || res.Close) {
		err = fmt.Errorf("status %d, close %v", res.StatusCode, res.Close)
	}
	return err
}

func (k *keepAlive) Close() error { return k.c.Close() }

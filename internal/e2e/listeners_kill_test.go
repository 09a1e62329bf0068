package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/fdtest"
)

// Kill -9 under load on several listeners: as checkKillUnderLoad, with
// new-connection clients on every listener, TCP and Unix; each failed
// request is judged by its client socket (a TCP port, a Unix socket's
// inode), which must have been inside the killed worker.

// killLoad sends requests on new connections to every endpoint and keeps
// each failure with the key of its client socket. Each asks /health, which
// must name the endpoint's listener: a connection the supervisor hands on
// (rr; reuseport: a vacant slot's backlog) keeps the listener it came
// from.
type killLoad struct {
	clients
	mu       sync.Mutex
	failures []keyedFailure
}

type keyedFailure struct {
	key string // tcp:PORT or unix:INODE of the client's socket
	err error
}

func startKillLoad(t testing.TB, eps []endpoint, perEndpoint int) *killLoad {
	l := &killLoad{clients: newClients()}
	for _, ep := range eps {
		for range perEndpoint {
			l.run(20000, 30*time.Second, func() bool { return l.one(ep) })
		}
	}
	t.Cleanup(l.finish)
	return l
}

// one sends a request to ep on a new connection, remembering its key.
func (l *killLoad) one(ep endpoint) bool {
	var mu sync.Mutex
	var key string
	base := ep.client(false).Transport.(*http.Transport)
	tr := base.Clone()
	dial := base.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			mu.Lock()
			key = socketKey(c)
			mu.Unlock()
		}
		return c, err
	}
	defer tr.CloseIdleConnections()
	if err := fetchListener(&http.Client{Transport: tr, Timeout: 5 * time.Second}, ep); err != nil {
		mu.Lock()
		k := key
		mu.Unlock()
		l.mu.Lock()
		l.failures = append(l.failures, keyedFailure{key: k, err: fmt.Errorf("%s: %w", ep.name, err)})
		l.mu.Unlock()
		return false
	}
	return true
}

// fetchListener gets ep's /health and checks that it names ep's listener.
func fetchListener(c *http.Client, ep endpoint) error {
	resp, err := c.Get(ep.base + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h struct{ Listener string }
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return err
	}
	switch {
	case resp.StatusCode != 200:
		return fmt.Errorf("status %d", resp.StatusCode)
	case h.Listener != ep.name:
		return fmt.Errorf("answered as listener %q", h.Listener)
	}
	return nil
}

// socketKey names the client side of c as killedKeys does.
func socketKey(c net.Conn) string {
	switch a := c.LocalAddr().(type) {
	case *net.TCPAddr:
		return "tcp:" + strconv.Itoa(a.Port)
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ""
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ""
	}
	var st syscall.Stat_t
	rc.Control(func(fd uintptr) { err = syscall.Fstat(int(fd), &st) })
	if err != nil {
		return ""
	}
	return "unix:" + strconv.FormatUint(st.Ino, 10)
}

// keysInside are the client sockets whose server side is in pid's
// descriptor table: the TCP ports of connections to tcpPorts, and the
// peers of its Unix stream sockets (from ss, which reads sock_diag).
func keysInside(t *testing.T, pid int, tcpPorts []int) map[string]bool {
	keys := map[string]bool{}
	for _, port := range tcpPorts {
		for p := range clientPortsInside(pid, port) {
			keys["tcp:"+strconv.Itoa(p)] = true
		}
	}
	inodes := map[string]bool{}
	targets, _ := fdtest.Targets(pid)
	for _, l := range targets {
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	out, err := exec.Command("ss", "-xnH", "state", "established").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && inodes[f[len(f)-3]] {
			keys["unix:"+f[len(f)-1]] = true
		}
	}
	return keys
}

// checkKillOnListeners: under new-connection load on every endpoint, kill
// -9 of one of s's workers fails no request but those inside it, and its
// replacement serves every listener.
func checkKillOnListeners(t *testing.T, s *sup, mode string, eps []endpoint, tcpPorts []int) {
	t.Helper()
	l := startKillLoad(t, eps, 2)
	l.waitOK(t, 200, 10*time.Second)
	victim := s.upgradeStatus().Workers[0]
	var inside map[string]bool
	s.killStopped(t, victim.PID, victim.Slot, func() { inside = keysInside(t, victim.PID, tcpPorts) })
	l.waitOK(t, 300, 10*time.Second)
	l.finish()
	lost := 0
	for _, f := range l.failures {
		if !inside[f.key] {
			lost++
			t.Errorf("request on %s failed and was not inside the killed worker: %v", f.key, f.err)
		}
	}
	t.Logf("%s: %d ok, %d failed (all inside the killed worker: %d connections there)", mode, l.ok.Load(), len(l.failures), len(inside))
	if lost > 0 {
		t.Fatalf("%d requests lost", lost)
	}
	checkListeners(t, mode, eps) // the replacement serves them all
}

// port is addr's port.
func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("address %q: no port", addr)
	}
	return n
}

package e2e

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestReusePortScaleDown: in reuseport mode, scaling 2 → 16 → 2 under a
// stream of new connections fails no request, and afterwards the
// supervisor holds the two remaining slots' sockets and nothing else on the
// port (no retired socket, no accept loop's duplicate), and hands off no
// connection itself: the kernel sends every new one to a worker's socket.
func TestReusePortScaleDown(t *testing.T) {
	maddr := proctest.FreeAddr(t)
	s := startReady(t, "-workers", "2", "-mode", "reuseport", "-metrics", maddr)
	metrics := "http://" + maddr + "/metrics"
	_, portStr, _ := net.SplitHostPort(s.addr)
	port, _ := strconv.Atoi(portStr)
	sup := s.PID()
	if have := listeningFDs(sup, port); have != 2 {
		t.Fatalf("at start: %d listening descriptors on the port, want 2", have)
	}

	l := startLoad(t, s.url("/pid"), 4, 5000, 30*time.Second)
	l.waitOK(t, 50, 5*time.Second)
	if out, code := s.ctl("scale", "16"); code != 0 {
		t.Fatalf("scale 16: %s", out)
	}
	l.waitOK(t, 200, 10*time.Second)
	if out, code := s.ctl("scale", "2"); code != 0 {
		t.Fatalf("scale 2: %s", out)
	}
	l.waitOK(t, 200, 10*time.Second)
	// The retired sockets close once nothing has arrived on them for a
	// moment: with new connections steered elsewhere, soon, load or not.
	proctest.Eventually(t, 10*time.Second, "two listening descriptors on the port", func() bool {
		return listeningFDs(sup, port) == 2
	})
	l.waitOK(t, 200, 10*time.Second)
	l.finish()
	if len(l.failures) > 0 {
		t.Fatalf("%d of %d requests failed, first: %v", len(l.failures), int(l.ok.Load())+len(l.failures), l.failures[0].err)
	}

	before := scrape(t, metrics, "prefork_handoffs_total")
	pids := map[string]bool{}
	for range 200 {
		code, body, err := s.get("/pid")
		if err != nil || code != 200 {
			t.Fatalf("GET /pid: %d %v", code, err)
		}
		pids[body] = true
	}
	if have := scrape(t, metrics, "prefork_handoffs_total"); have != before {
		t.Fatalf("the supervisor handed off %v of 200 new connections; want none", have-before)
	}
	if len(pids) != 2 {
		t.Fatalf("200 requests reached %d workers, want 2", len(pids))
	}
}

// listeningFDs counts pid's descriptors that refer to a listening IPv4 TCP
// socket bound to port.
func listeningFDs(pid, port int) int {
	listening := map[string]bool{} // socket inodes
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// sl local_address rem_address st ... inode (field 9); st 0A is LISTEN.
		if len(fs) >= 10 && fs[3] == "0A" && hexPort(fs[1]) == port {
			listening[fs[9]] = true
		}
	}
	n := 0
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err == nil && listening[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			n++
		}
	}
	return n
}

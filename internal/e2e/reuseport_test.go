package e2e

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestReusePortScaleDown: in reuseport mode, with two TCP listeners (a
// group each), scaling 2 → 16 → 2 under a stream of new connections on
// both fails no request, and afterwards the supervisor holds the two
// remaining slots' sockets of each group and nothing else on either port
// (no retired socket, no accept loop's duplicate), and hands off no
// connection itself: the kernel sends every new one to a worker's socket.
func TestReusePortScaleDown(t *testing.T) {
	maddr, api := proctest.FreeAddr(t), proctest.FreeAddr(t)
	s := startReady(t, "-workers", "2", "-mode", "reuseport", "-listen", "api="+api, "-metrics", maddr)
	metrics := "http://" + maddr + "/metrics"
	sup := s.PID()
	addrs := []string{s.addr, api}
	settled := func() bool {
		for _, a := range addrs {
			if listeningFDs(sup, port(t, a)) != 2 {
				return false
			}
		}
		return true
	}
	if !settled() {
		t.Fatalf("at start: not 2 listening descriptors on each of %v", addrs)
	}

	var loads []*load
	for _, a := range addrs {
		loads = append(loads, startLoad(t, "http://"+a+"/pid", 2, 5000, 30*time.Second))
	}
	waitOK := func(n int64) {
		for _, l := range loads {
			l.waitOK(t, n, 10*time.Second)
		}
	}
	waitOK(25)
	if out, code := s.ctl("scale", "16"); code != 0 {
		t.Fatalf("scale 16: %s", out)
	}
	waitOK(100)
	if out, code := s.ctl("scale", "2"); code != 0 {
		t.Fatalf("scale 2: %s", out)
	}
	waitOK(100)
	// The retired sockets close once nothing has arrived on them for a
	// moment: with new connections steered elsewhere, soon, load or not.
	proctest.Eventually(t, 10*time.Second, "two listening descriptors on each port", settled)
	waitOK(100)
	for i, l := range loads {
		l.finish()
		if len(l.failures) > 0 {
			t.Fatalf("%s: %d of %d requests failed, first: %v", addrs[i], len(l.failures), int(l.ok.Load())+len(l.failures), l.failures[0].err)
		}
	}

	before := scrape(t, metrics, "prefork_handoffs_total")
	for _, a := range addrs {
		pids := map[string]bool{}
		for range 100 {
			resp, err := s.client.Get("http://" + a + "/pid")
			if err != nil {
				t.Fatalf("GET %s/pid: %v", a, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET %s/pid: %d %v", a, resp.StatusCode, err)
			}
			pids[string(b)] = true
		}
		if len(pids) != 2 {
			t.Fatalf("100 requests to %s reached %d workers, want 2", a, len(pids))
		}
	}
	if have := scrape(t, metrics, "prefork_handoffs_total"); have != before {
		t.Fatalf("the supervisor handed off %v of 200 new connections; want none", have-before)
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

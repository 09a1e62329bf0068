package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// checkStrayWarned: every worker of s that listened on other, an address
// s does not serve, was named in a WARN with both addresses.
func checkStrayWarned(t *testing.T, s *sup, other string) {
	t.Helper()
	port := other[strings.LastIndex(other, ":")+1:]
	for _, w := range s.status().Workers {
		want := fmt.Sprintf("worker %d (pid %d) listens on :%s, which prefork does not serve (it serves %s)", w.Slot, w.PID, port, s.addr)
		if _, ok := s.Out.WaitJSON(5*time.Second, func(m map[string]any) bool {
			return m["level"] == "warn" && m["msg"] == want
		}); !ok {
			t.Errorf("no WARN %q in the log:\n%s", want, s.Out.Tail(30))
		}
	}
}

// TestNodeStrictListen: under -strict-listen, an app that listens on an
// address the supervisor does not serve (here its own default port, as
// examples/node/app.js does without PORT=0) fails to start: the supervisor
// exits 1 naming the worker and both addresses, and nothing stays bound.
func TestNodeStrictListen(t *testing.T) {
	node, app := nodeApp(t)
	other := proctest.FreeAddr(t)
	port := other[strings.LastIndex(other, ":")+1:]
	t.Setenv("PORT", port)
	s := start(t, "-workers", "2", "-strict-listen", "--", node, app)
	if code := s.WaitExit(15 * time.Second); code != 1 {
		t.Fatalf("exit %d with a worker listening on :%s under -strict-listen, want 1", code, port)
	}
	want := fmt.Sprintf("listens on :%s, which prefork does not serve (it serves %s)", port, s.addr)
	var stop map[string]any
	for _, m := range s.Out.JSON() {
		if m["msg"] == "stopping" && strings.Contains(fmt.Sprint(m["error"]), want) {
			stop = m
		}
	}
	if stop == nil || !strings.Contains(fmt.Sprint(stop["error"]), "-strict-listen: worker ") {
		t.Fatalf("no stop naming -strict-listen, the worker and %q in the log:\n%s", want, s.Out.Tail(30))
	}
	if !strings.Contains(s.Out.String(), want) {
		t.Fatalf("exit 1 without %q", want)
	}
	if c, err := net.Dial("tcp", other); err == nil {
		c.Close()
		t.Fatalf("%s accepts after the failed start", other)
	}
}

// TestNodeTwoServers: a Node cluster app whose workers each run two
// servers, one on a TCP port and one on a Unix socket path, both of them
// -listen addresses: each server gets its own listener (rr: a key per
// listener, its connections handed with it; shared: a handle per
// listener; reuseport: its slot's socket of the TCP port's group, and the
// Unix socket shared), both answer, and both spread over the workers.
func TestNodeTwoServers(t *testing.T) {
	node := need(t, "node", "nodejs (Node.js 20 or later)")
	app, err := filepath.Abs(filepath.Join("testdata", "two_servers.js"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"rr", "shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			addr := proctest.FreeAddr(t)
			dir := t.TempDir()
			sock, ctl := filepath.Join(dir, "app.sock"), filepath.Join(dir, "ctl.sock")
			cmd := exec.Command(supervisorBin, "-listen", addr, "-listen", "unix:"+sock, "-mode", mode, "-workers", "2",
				"-strict-listen", "-log-format", "json", "-control", ctl, "--", node, app)
			cmd.Env = append(os.Environ(), "PORT="+addr[strings.LastIndex(addr, ":")+1:], "SOCK="+sock)
			s := adopt(t, cmd, addr, ctl)
			s.waitReady(10 * time.Second)
			pids := map[int]bool{}
			for _, w := range s.status().Workers {
				pids[w.PID] = true
			}
			for _, ep := range []endpoint{tcpEndpoint("tcp", addr), unixEndpoint("unix", sock)} {
				checkTwoServers(t, mode, ep, pids)
			}
			if strings.Contains(s.Out.String(), "prefork does not serve") {
				t.Fatalf("a stray listen reported:\n%s", s.Out.Tail(20))
			}
		})
	}
}

// checkTwoServers: ep's /pid is answered by its own server ("NAME PID")
// in both workers, evenly in rr.
func checkTwoServers(t *testing.T, mode string, ep endpoint, pids map[int]bool) {
	t.Helper()
	c := ep.client(false)
	count := map[int]int{}
	proctest.Eventually(t, 10*time.Second, ep.name+": both workers answer", func() bool {
		for range 20 {
			resp, err := c.Get(ep.base + "/pid")
			if err != nil {
				t.Fatalf("%s: %v", ep.name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var name string
			var pid int
			if _, err := fmt.Sscan(string(b), &name, &pid); err != nil || name != ep.name || !pids[pid] {
				t.Fatalf("%s: /pid answered %q, want %q and a worker's pid of %v", ep.name, b, ep.name, pids)
			}
			count[pid]++
		}
		return len(count) == 2
	})
	t.Logf("%s: answers by worker pid: %v", ep.name, count)
	if mode != "rr" {
		return
	}
	for pid, n := range count {
		if n*4 < sumOf(count) { // rr alternates: each about half
			t.Errorf("%s: worker %d answered %d of %d, want about half (rr)", ep.name, pid, n, sumOf(count))
		}
	}
}

func sumOf(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// slowRequest opens a connection, sends GET /sleep?ms=ms on it and waits
// until the connection is inside one of workers; it returns the connection
// (closed at the end of the test) and that worker's pid.
func (s *sup) slowRequest(workers []int, ms int) (net.Conn, int) {
	s.t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /sleep?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n", ms)
	var owner int
	proctest.Eventually(s.t, 3*time.Second, "slow request inside a worker", func() bool {
		var ok bool
		owner, ok = connOwner(c.LocalAddr(), workers)
		return ok
	})
	return c, owner
}

// stopDuringRequest sends SIGTERM while a request of ms milliseconds is
// inside a worker, and checks the stop is graceful: the request gets 200,
// the supervisor exits 0 after its workers, and the port is closed.
func (s *sup) stopDuringRequest(ms int) {
	s.t.Helper()
	workers := s.Children()
	conn, _ := s.slowRequest(workers, ms)
	s.Signal(syscall.SIGTERM)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		s.t.Fatalf("in-flight request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		s.t.Fatalf("in-flight request: status %d", resp.StatusCode)
	}
	if code := s.WaitExit(10 * time.Second); code != 0 {
		s.t.Fatalf("exit status %d, want 0", code)
	}
	for _, pid := range workers {
		if procfs.Alive(pid) {
			s.t.Errorf("worker %d alive after the supervisor exited", pid)
		}
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		s.t.Fatal("port still accepts connections after stop")
	}
}

// connOwner returns the pid, among pids, that holds the server side of the
// TCP connection whose client end is local: the connection is inside that
// process. It reads /proc/net/tcp for the socket's inode and each process's
// fd table for a link to it.
func connOwner(local net.Addr, pids []int) (int, bool) {
	la, ok := local.(*net.TCPAddr)
	if !ok {
		return 0, false
	}
	inode := serverInode(la.Port)
	if inode == "" {
		return 0, false
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		targets, _ := fdtest.Targets(pid) // none once pid is gone
		for _, target := range targets {
			if target == want {
				return pid, true
			}
		}
	}
	return 0, false
}

// serverInode finds, in /proc/net/tcp, the inode of the socket whose remote
// port is clientPort (the server's end of our connection).
func serverInode(clientPort int) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", clientPort)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// sl local_address rem_address st ... inode is field 9
		if len(fs) > 9 && strings.HasSuffix(fs[2], want) && fs[3] == "01" {
			return fs[9]
		}
	}
	return ""
}

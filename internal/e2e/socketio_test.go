package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// socket.io 4 under -sticky socketio: examples/socketio, an app written
// for @socket.io/sticky (its workers call setupWorker and never listen),
// run unmodified, and driven by real socket.io clients
// (examples/socketio/client.js) forced to long-polling, where every poll
// is a new HTTP request that must reach the worker holding its session.

// socketioApp returns node's path and the example's directory, failing
// with what to install if node or the example's npm packages are missing.
func socketioApp(t *testing.T) (string, string) {
	t.Helper()
	node := need(t, "node", "nodejs (Node.js 20 or later)")
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", "socketio"))
	if err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(dir, "node_modules", "socket.io", "package.json")) {
		t.Fatalf("%s has no node_modules: run make test-deps (npm ci there)", dir)
	}
	return node, dir
}

// sioClient is one client's report from client.js.
type sioClient struct {
	ID        int      `json:"id"`
	SIDs      []string `json:"sids"`
	PIDs      []int    `json:"pids"`
	Acks      int      `json:"acks"`
	Handshake int      `json:"handshake"`
	Unknown   int      `json:"unknown"`
	Timeouts  int      `json:"timeouts"`
	Reasons   []string `json:"reasons"`
	Before    struct { // at the pause
		Acks, Handshake, Unknown, Disconnects int
		PIDs                                  []int
	} `json:"before"`
}

// lost is how many times the client lost its session (disconnects other
// than its own close at the end).
func (c sioClient) lost() int {
	n := 0
	for _, r := range c.Reasons {
		if r != "io client disconnect" {
			n++
		}
	}
	return n
}

// runSIOClients runs client.js against url: clients clients of emits
// acknowledged emits each. With pause > 0 every client stops after pause
// emits, and atPause runs before they go on. It returns the report.
func runSIOClients(t *testing.T, node, dir, url string, clients, emits, pause int, ackTimeout time.Duration, atPause func()) []sioClient {
	t.Helper()
	cmd := exec.Command(node, filepath.Join(dir, "client.js"), url, strconv.Itoa(clients), strconv.Itoa(emits))
	cmd.Env = append(os.Environ(), "PAUSE="+strconv.Itoa(pause), "ACK_TIMEOUT_MS="+strconv.Itoa(int(ackTimeout/time.Millisecond)))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() }) // bounded, whatever happens
	defer timer.Stop()
	var report []sioClient
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "paused" {
				atPause()
				io.WriteString(stdin, "go\n")
				continue
			}
			if err := json.Unmarshal([]byte(line), &report); err != nil {
				t.Errorf("client.js report: %v: %.200s", err, line)
			}
		}
	}()
	<-done
	if err := cmd.Wait(); err != nil || len(report) != clients {
		t.Fatalf("client.js: %v, %d reports of %d; stderr:\n%s", err, len(report), clients, stderr.String())
	}
	return report
}

// TestSocketIOSticky: 4 workers under -sticky socketio, 200 polling
// clients of 20 acknowledged emits each. Before anything fails, not one
// handshake error and not one "Session ID unknown". Then, halfway, a kill
// -9 of one worker: only the clients whose session it held reconnect;
// every other session goes on, on its worker, to its last emit.
func TestSocketIOSticky(t *testing.T) {
	node, dir := socketioApp(t)
	s := startReady(t, "-workers", "4", "-sticky", "socketio", "-grace", "2s", "--", node, filepath.Join(dir, "app.js"))
	const clients, emits = 200, 20
	var victim int
	report := runSIOClients(t, node, dir, s.url(""), clients, emits, emits/2, 20*time.Second, func() {
		victim = s.status().Workers[0].PID
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Error(err)
		}
		proctest.WaitGone(t, victim, 5*time.Second)
	})
	var handshake, unknown, served, victims int
	for _, c := range report {
		handshake += c.Before.Handshake
		unknown += c.Before.Unknown
		if len(c.Before.PIDs) > 0 {
			served++
		}
		if len(c.Before.PIDs) > 1 || c.Before.Disconnects > 0 {
			t.Errorf("client %d changed worker or session before the kill: pids %v, %d disconnects", c.ID, c.Before.PIDs, c.Before.Disconnects)
		}
		switch {
		case len(c.Before.PIDs) == 1 && c.Before.PIDs[0] == victim:
			victims++
			// An emit sent to its dead session before the client
			// learns it is dead is lost (socket.io does not resend it
			// without connection state recovery): it must reconnect
			// and go on.
			if len(c.SIDs) < 2 || c.Acks <= c.Before.Acks {
				t.Errorf("client %d of the killed worker %d did not reconnect and go on: sids %v, %d of %d emits acknowledged, %d before the kill",
					c.ID, victim, c.SIDs, c.Acks, emits, c.Before.Acks)
			}
		case c.Acks != emits:
			t.Errorf("client %d: %d of %d emits acknowledged (%d timed out)", c.ID, c.Acks, emits, c.Timeouts)
		case len(c.SIDs) != 1 || c.lost() > 0 || len(c.PIDs) != 1 || c.Unknown > 0 || c.Handshake > 0:
			t.Errorf("client %d of a live worker lost its session: sids %v, pids %v, reasons %v, %d unknown, %d handshake errors",
				c.ID, c.SIDs, c.PIDs, c.Reasons, c.Unknown, c.Handshake)
		}
	}
	if handshake != 0 || unknown != 0 || served != clients {
		t.Errorf("before the kill: %d handshake errors, %d Session ID unknown, %d of %d clients served", handshake, unknown, served, clients)
	}
	if victims == 0 || victims == clients {
		t.Errorf("%d of %d clients were on the killed worker: the test shows nothing", victims, clients)
	}
	t.Logf("%d clients, %d on the killed worker %d, all reconnected; the others kept their sessions", clients, victims, victim)
}

// TestSocketIONeedsStickiness: the same app under Node's own cluster
// round-robin, without stickiness (STICKY=none: its workers listen, its
// primary deals connections in turn), completes next to no polling
// session: each request of a session reaches any worker.
func TestSocketIONeedsStickiness(t *testing.T) {
	node, dir := socketioApp(t)
	addr := proctest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(node, filepath.Join(dir, "app.js"))
	cmd.Env = append(os.Environ(), "NODE_CLUSTER_SCHED_POLICY=rr", "STICKY=none", "WORKERS=4", "HOST=127.0.0.1", "PORT="+port)
	p := proctest.Start(t, cmd)
	proctest.Eventually(t, 10*time.Second, "Node's cluster serves", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil && len(p.Children()) == 4
	})
	const clients, emits = 20, 3
	report := runSIOClients(t, node, dir, "http://"+addr, clients, emits, 0, time.Second, nil)
	complete := 0
	for _, c := range report {
		if c.Acks == emits && c.lost() == 0 && c.Unknown == 0 {
			complete++
		}
	}
	if complete > clients/10 {
		t.Errorf("%d of %d polling sessions completed under Node's cluster without stickiness: want next to none", complete, clients)
	}
	t.Logf("Node's cluster rr without stickiness: %d of %d polling sessions completed", complete, clients)
}

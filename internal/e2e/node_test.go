package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// Unmodified Node.js cluster apps (-worker-protocol node), run with the
// real node binary: the tutorial-style example in examples/node, which
// forks a worker per CPU when run by itself and serves HTTP when the
// supervisor runs it as a worker.

// nodeApp returns node's path and the example app's, failing with what to
// install if node is missing.
func nodeApp(t *testing.T) (string, string) {
	t.Helper()
	node := need(t, "node", "nodejs (Node.js 20 or later)")
	app, err := filepath.Abs(filepath.Join("..", "..", "examples", "node", "app.js"))
	if err != nil {
		t.Fatal(err)
	}
	return node, app
}

// TestNodeClusterApp runs the example under the default protocol for a
// node command, in every mode: every worker serves and is a cluster
// worker whose id is its slot, process.send reaches the event stream, a
// kill -9 is respawned while the other worker keeps serving, a worker
// that disconnects itself is replaced, a reload under load fails no
// request, and a stop (Node's disconnect) exits 0 with every worker
// exiting by itself. In rr mode, where the supervisor hands Node's
// workers each connection, new connections alternate between them, and a
// kill -9 under load fails no request but those inside the killed worker.
func TestNodeClusterApp(t *testing.T) {
	node, app := nodeApp(t)
	// PORT=0: the app's listen(0) takes the supervisor's port, whatever
	// the test picked.
	t.Setenv("PORT", "0")
	for _, mode := range []string{"rr", "shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode, "-grace", "10s", "--", node, app)
			checkNodeWorkers(t, s)
			if mode == "rr" {
				checkAlternation(t, s)
			}
			checkNodeSend(t, s)
			checkForeignLifecycle(t, s, 2, 2, 2)
		})
		// A supervisor of its own: checkForeignLifecycle matches the
		// first respawn of a slot in the event history.
		t.Run(mode+"/replace", func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode, "-grace", "10s", "--", node, app)
			checkNodeKill(t, s)
			checkNodeDisconnect(t, s)
			if mode == "rr" {
				checkKillUnderLoad(t, s)
			}
		})
	}
}

// checkNodeWorkers: /health answers with cluster.worker.id, which is the
// slot of the worker whose pid it reports.
func checkNodeWorkers(t *testing.T, s *sup) {
	t.Helper()
	slots := map[int]int{} // pid → slot
	for _, w := range s.status().Workers {
		slots[w.PID] = w.Slot
	}
	seen := map[int]bool{}
	proctest.Eventually(t, 10*time.Second, "both workers answer /health", func() bool {
		code, body, err := s.get("/health")
		if err != nil || code != 200 {
			return false
		}
		var h struct {
			Status string `json:"status"`
			PID    int    `json:"pid"`
			Worker int    `json:"worker"`
		}
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("/health: %v: %q", err, body)
		}
		if h.Status != "ok" || slots[h.PID] == 0 || h.Worker != slots[h.PID] {
			t.Fatalf("/health = %q; want status ok and worker = the slot of pid %d (%v)", body, h.PID, slots)
		}
		seen[h.PID] = true
		return len(seen) == len(slots)
	})
}

// checkNodeSend: a worker's process.send({...}) is a message event.
func checkNodeSend(t *testing.T, s *sup) {
	t.Helper()
	code, body, err := s.get("/send?text=node-says-hi")
	if err != nil || code != 200 {
		t.Fatalf("/send: %d %q %v", code, body, err)
	}
	e := s.waitEvent(5*time.Second, control.EventMessage, func(e proctest.Event) bool {
		return strings.Contains(e.Str("msg"), "node-says-hi")
	})
	var msg struct {
		From int    `json:"from"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal([]byte(e.Str("msg")), &msg); err != nil || msg.Text != "node-says-hi" || msg.From != e.Int("slot") {
		t.Fatalf("message event %v: want the JSON the worker sent, from its slot (%v)", e.Event, err)
	}
}

// checkNodeKill: while a killed worker is respawned, the other serves
// every request.
func checkNodeKill(t *testing.T, s *sup) {
	t.Helper()
	workers := s.status().Workers
	victim, other := workers[0], workers[1]
	if victim.Slot != 2 {
		victim, other = other, victim
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	proctest.WaitGone(t, victim.PID, 5*time.Second)
	for i := range 20 {
		code, body, err := s.get("/pid")
		if err != nil || code != 200 {
			t.Fatalf("request %d after kill -9 of %d: %d %q %v", i, victim.PID, code, body, err)
		}
	}
	e := s.waitEvent(10*time.Second, control.EventReady, func(e proctest.Event) bool {
		return e.Int("slot") == victim.Slot && e.Int("pid") != victim.PID
	})
	if !procfs.Alive(other.PID) {
		t.Fatalf("worker %d died with its neighbour", other.PID)
	}
	proctest.Eventually(t, 10*time.Second, "the respawned worker serves", func() bool {
		pid, err := s.pid()
		return err == nil && pid == e.Int("pid")
	})
}

// checkNodeDisconnect: a worker that calls cluster.worker.disconnect()
// exits with code 0 and is replaced in its slot at once, as intended, not
// as a crash.
func checkNodeDisconnect(t *testing.T, s *sup) {
	t.Helper()
	leaving := 0
	for _, w := range s.status().Workers {
		if w.Slot == 2 {
			leaving = w.PID
		}
	}
	proctest.Eventually(t, 10*time.Second, "slot 2's worker answers /disconnect", func() bool {
		code, body, err := s.get("/disconnect")
		return err == nil && code == 200 && body == fmt.Sprintf("bye from %d\n", leaving)
	})
	exit := s.waitEvent(10*time.Second, control.EventExit, func(e proctest.Event) bool { return e.Int("pid") == leaving })
	if _, ok := exit.Fields()["code"]; !ok || exit.Str("reason") != string(control.CauseDisconnect) || exit.Int("code") != 0 {
		t.Fatalf("exit of a worker that disconnected itself: %v; want reason disconnect, code 0", exit.Event)
	}
	fork := s.waitEvent(10*time.Second, control.EventFork, func(e proctest.Event) bool {
		return e.Int("slot") == 2 && e.Str("cause") == string(control.CauseDisconnect)
	})
	s.waitEvent(10*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Int("pid") == fork.Int("pid") })
}

// TestNodeOtherPort: an app that listens on a port other than the
// supervisor's gets a socket the supervisor binds for it, as Node's
// primary binds one, shared by every worker, and a warning naming both
// addresses and the worker; the port stops accepting when the supervisor
// stops.
func TestNodeOtherPort(t *testing.T) {
	node, app := nodeApp(t)
	// No -mode: a node command runs in shared mode by default. In rr mode
	// the other port is shared too: the supervisor round-robins its own.
	for _, mode := range [][]string{nil, {"-mode", "rr"}} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) { checkNodeOtherPort(t, node, app, mode...) })
	}
}

func checkNodeOtherPort(t *testing.T, node, app string, flags ...string) {
	other := proctest.FreeAddr(t)
	t.Setenv("PORT", other[strings.LastIndex(other, ":")+1:])
	s := startReady(t, append(flags, "-workers", "2", "--", node, app)...)
	checkStrayWarned(t, s, other)
	pids := map[string]bool{}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	proctest.Eventually(t, 10*time.Second, "both workers answer on the other port", func() bool {
		resp, err := client.Get("http://" + other + "/pid")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		pids[strings.TrimSpace(string(b))] = true
		return len(pids) == 2
	})
	s.Signal(syscall.SIGTERM)
	if code := s.WaitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit %d after a stop, want 0", code)
	}
	if c, err := net.Dial("tcp", other); err == nil {
		c.Close()
		t.Fatal("the other port still accepts after the supervisor stopped")
	}
}

// TestNodeStoppedWorker: in rr mode a stopped Node worker (SIGSTOP, or an
// event loop blocked by a synchronous handler) keeps at most the one
// connection written to its channel; those queued for it behind that one
// go to the other worker within about a second, not when it resumes.
func TestNodeStoppedWorker(t *testing.T) {
	node, app := nodeApp(t)
	t.Setenv("PORT", "0")
	s := startReady(t, "-workers", "2", "-mode", "rr", "-grace", "10s", "--", node, app)
	checkNodeWorkers(t, s)
	victim := s.status().Workers[0].PID
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Resumed at the end, whatever happens, so that it can drain.
	defer syscall.Kill(victim, syscall.SIGCONT)
	proctest.Eventually(t, 2*time.Second, "victim stopped", func() bool { return stopped(victim) })

	const n = 8 // round-robin: half of them are handed to the victim
	type result struct {
		pid int
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			pid, err := s.pid() // its own connection, 5 s timeout
			results <- result{pid, err}
		}()
	}
	served, failed := 0, 0
	for range n {
		r := <-results // each ends within the client's timeout
		switch {
		case r.err != nil:
			failed++
		case r.pid == victim:
			t.Fatalf("stopped worker %d served a request", victim)
		default:
			served++
		}
	}
	t.Logf("while worker %d was stopped: %d served by the other, %d timed out", victim, served, failed)
	if failed > 1 {
		t.Fatalf("%d of %d requests timed out while one worker was stopped; want at most the one written to it", failed, n)
	}
}

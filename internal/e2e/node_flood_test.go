package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// A Node worker flooding its IPC channel must not inflate the supervisor
// for good (issue 20, defect 4): 60 valid JSON messages of 3 MiB, with
// one `ctl events` subscriber that never reads and the harness's own,
// which does. Each event stream gets the messages cut to
// control.MaxEventMsg, so the one that never reads holds at most its
// queue of cut messages; and once the burst is over the supervisor gives
// the memory it took back to the OS. Before, the stuck subscriber kept
// every message whole (hundreds of MiB) and, without it, RSS stayed
// 20–90 MiB above its baseline for minutes. Measured (anonymous RSS, 2
// MiB before): 9 MiB after the trim, 23 MiB a minute on without it; the
// subscriber that never reads holds about 2 MiB of that.
//
// Built without -race, like TestAdminEventFlood: the race runtime's
// shadow memory is not the supervisor's.
func TestNodeMessageFloodMemory(t *testing.T) {
	bin, err := proctest.Build("./cmd/supervisor")
	if err != nil {
		t.Fatal(err)
	}
	node := need(t, "node", "nodejs (Node.js 20 or later)")
	app, err := filepath.Abs(filepath.Join("testdata", "flood.js"))
	if err != nil {
		t.Fatal(err)
	}
	s := startBin(t, bin, "-workers", "1", "-mode", "rr", "--", node, app)
	sup := s.PID()
	base := rssAnon(t, sup)
	stuck := stuckSubscriber(t, s.ctlPath)
	defer stuck.Close()

	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + s.addr + "/flood?n=60&kib=3072")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var peak int64
	proctest.Eventually(t, 60*time.Second, "the harness's stream to have the 60 messages", func() bool {
		peak = max(peak, rssAnon(t, sup))
		return len(s.events.All(control.EventMessage)) >= 60
	})
	for _, e := range s.events.All(control.EventMessage)[:1] {
		if msg, n := e.Str("msg"), e.Int("msg_bytes"); len(msg) > control.MaxEventMsg || n < 3<<20 {
			t.Errorf("a 3 MiB message reached the event stream as %d bytes of msg, msg_bytes %d: want at most %d, and the full size", len(msg), n, control.MaxEventMsg)
		}
	}
	// Back within a few MiB: an idle supervisor's own grows by about as
	// much over a minute. Anonymous memory only: the binary's pages that
	// the flood's code paths brought in are not memory it holds.
	const slack = 10 << 20
	var last int64
	back := proctest.Poll(60*time.Second, func() bool {
		last = rssAnon(t, sup)
		peak = max(peak, last)
		return last <= base+slack
	})
	t.Logf("anonymous RSS %d MiB before, peak %d MiB, then %d MiB", base>>20, peak>>20, last>>20)
	if !back {
		t.Errorf("anonymous RSS %d MiB a minute after the flood, want at most %d MiB (baseline %d MiB + %d)", last>>20, (base+slack)>>20, base>>20, slack>>20)
	}
	if !s.Running() {
		t.Fatalf("the supervisor exited: %d", s.ExitCode())
	}
}

// stuckSubscriber asks the control socket at path for events and never
// reads them, with a receive buffer of a few KiB.
func stuckSubscriber(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).SetReadBuffer(4 << 10)
	if err := json.NewEncoder(c).Encode(control.Request{Cmd: control.CmdEvents}); err != nil {
		t.Fatal(err)
	}
	// The subscription is live once its first line, the "subscribed"
	// event, comes; then read nothing more.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatalf("ctl events: no subscribed line: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

// rssAnon is pid's anonymous resident memory in bytes (RssAnon in
// /proc/PID/status): its heap and stacks, not the binary's pages.
func rssAnon(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("RssAnon: %q: %v", v, err)
			}
			return kib << 10
		}
	}
	t.Fatalf("no RssAnon in /proc/%d/status", pid)
	return 0
}

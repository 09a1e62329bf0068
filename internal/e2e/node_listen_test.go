package e2e

import (
	"fmt"
	"net"
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

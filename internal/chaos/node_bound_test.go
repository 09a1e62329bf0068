package chaos

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestNodeMessageOverBound: a Node worker that sends one message over the
// documented bound (nodeipc.MaxLine, 4 MiB) breaks the protocol: the
// supervisor reports it as such (a protocol event) and replaces the
// worker, whose exit is not taken for a crash.
func TestNodeMessageOverBound(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed (install Node.js 20 or later): %v", err)
	}
	app, err := filepath.Abs("../e2e/testdata/flood.js")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, opts{mode: "rr", workers: 1, command: []string{node, app}})
	before := s.workers()
	get(s.addr, "/flood?n=1&kib=5120", 10*time.Second) // its answer may be cut short
	replaced := func() bool {
		for pid := range s.workers() {
			if _, old := before[pid]; !old {
				return true
			}
		}
		return false
	}
	if !proctest.Poll(15*time.Second, replaced) {
		t.Fatalf("the worker was not replaced; workers %v", keys(s.workers()))
	}
	out := s.Out.String()
	for _, want := range []string{"over the 4 MiB bound", "replacing a worker that keeps breaking the protocol"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the log", want)
		}
	}
	if strings.Contains(out, `"reason":"crash"`) {
		t.Errorf("the worker's exit was taken for a crash:\n%s", grepLines(out, "worker exited"))
	}
	s.stop()
}

package chaos

import (
	"context"
	"fmt"
	"github.com/prefork/prefork/internal/proctest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// closingWrapper writes a release that closes the first descriptor of
// role the upgrade's state lists, then execs real: something between the
// two images that closes what it should not.
func closingWrapper(t *testing.T, real, role string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "closes-"+role)
	// sh for the check, which must answer within 5s on a loaded machine.
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = -check-upgrade ] && exec %[1]q "$@"
exec python3 -c '
import json, os, sys
state = json.loads(os.pread(int(os.environ["PREFORK_UPGRADE_STATE"]), 64 << 20, 0))
for f in state["fds"]:
    if f["role"] == "%[2]s":
        os.close(f["fd"])
        break
os.execv(%[1]q, [%[1]q] + sys.argv[1:])
' "$@"
`, real, role)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// upgrade asks for an upgrade to path over the control socket.
func (s *sup) upgrade(path string) control.Response {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdUpgrade, Path: path})
	if err != nil {
		s.t.Fatalf("ctl upgrade %s: %v", path, err)
	}
	return resp
}

// TestUpgradeMissingDescriptor: a descriptor the state lists is closed
// before the new image runs. The new image rebuilds without it — a lost
// worker channel or reuseport socket replaces that worker, a lost
// listener is bound again — and serves on, rather than fail, roll back
// with the same state, fail again and take every worker down.
func TestUpgradeMissingDescriptor(t *testing.T) {
	cases := map[string][]string{
		"rr":        {"handoff-duplicate", "listener"},
		"shared":    {"control-channel"},
		"reuseport": {"reuseport"},
	}
	for _, mode := range pick([]string{"rr"}, modes) {
		for _, role := range cases[mode] {
			t.Run(mode+"/"+role, func(t *testing.T) { missingDescriptor(t, mode, role) })
		}
	}
}

func missingDescriptor(t *testing.T, mode, role string) {
	s := start(t, opts{mode: mode, workers: 2})
	before := s.workers()
	l := startLoad(s.addr, mixed(time.Minute))
	defer l.finish()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= 50 }) {
		t.Fatalf("load did not start: %d requests served in 5s", l.okCount())
	}
	resp := s.upgrade(closingWrapper(t, supervisorBin, role))
	if !resp.OK || !strings.Contains(resp.Message, "rebuilt without") || !strings.Contains(resp.Message, role) {
		t.Fatalf("ctl upgrade: %+v; want upgraded, rebuilt without a %s descriptor", resp, role)
	}
	s.waitSettled(2, 15*time.Second)
	kept := 0
	for pid := range s.workers() {
		if _, ok := before[pid]; ok {
			kept++
		}
	}
	want := 1 // the worker whose channel or socket was lost is replaced
	if role == "listener" {
		want = 2
	}
	if kept != want {
		t.Errorf("%d of the workers kept, want %d", kept, want)
	}
	// Serving on; what the killed worker had in hand, or the lost
	// listener's backlog, may fail: counted, not asserted.
	served := l.okCount()
	if !proctest.Poll(5*time.Second, func() bool { return l.okCount() >= served+50 }) {
		t.Errorf("not serving after the upgrade: %d requests in 5s", l.okCount()-served)
	}
	sum := summarize(l.finish())
	figure(t, "upgrade-missing-fd", mode, "role", role, "kept", kept, "requests", sum.total, "failed", sum.failed)
	s.stop()
}

package e2e

import (
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestListenNamed: Go workers that run one http.Server per listener
// (cluster.ListenNamed; the demo worker's -per-listener), on two TCP
// listeners in rr, shared and reuseport mode. Each server names in /health the
// listener it was started for, so a connection routed to the wrong server
// shows; /pid is balanced on each; a reload under load on both fails
// nothing (each worker's drain waits for both servers); ctl stop exits 0.
func TestListenNamed(t *testing.T) {
	for _, mode := range []string{"rr", "shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			api := proctest.FreeAddr(t)
			s := startReady(t, "-mode", mode, "-workers", "2", "-listen", "api="+api, "--", workerBin, "-per-listener")
			eps := []endpoint{tcpEndpoint(s.addr, s.addr), tcpEndpoint("api", api)}
			checkListeners(t, mode, eps)

			load := mixedLoadOn(t, eps)
			load.waitOK(t, 100, 10*time.Second)
			if out, code := s.ctl("reload"); code != 0 {
				t.Fatalf("ctl reload: exit %d: %s", code, out)
			}
			load.waitOK(t, 100, 10*time.Second)
			load.check(t)
			checkListeners(t, mode, eps)

			if out, code := s.ctl("stop"); code != 0 {
				t.Fatalf("ctl stop: exit %d: %s", code, out)
			}
			if code := s.WaitExit(10 * time.Second); code != 0 {
				t.Fatalf("exit status %d after stop", code)
			}
		})
	}
}

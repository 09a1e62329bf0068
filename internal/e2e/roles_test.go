package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/internal/ipc"
)

// runRole runs the test binary as a worker program of the given role.
// Started by startRole, a role passes its gate before what a test watches.
func runRole(role string) int {
	switch role {
	case "exit-at-boot":
		if !passGate() {
			return 1
		}
		// Exits 3 before it is ready; the worker of any slot but 1 waits
		// first for the file PREFORK_E2E_HOLD names, so that a test can
		// watch the supervisor react to slot 1 while it still runs.
		fmt.Fprintln(os.Stderr, "boot failure")
		if os.Getenv(ipc.EnvWorkerID) != "1" && !waitFile(os.Getenv("PREFORK_E2E_HOLD"), 10*time.Second) {
			fmt.Fprintln(os.Stderr, "exit-at-boot: not released within 10s")
		}
		return 3
	case "crash-after-ready":
		// Becomes ready, then dies: a respawn storm if nothing stops it.
		if _, err := cluster.Listen(":0"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := cluster.Ready(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// The gate comes after Ready: the first worker dying at once
		// would race its ready frame, and the supervisor could take it
		// for one that never became ready.
		if !passGate() {
			return 1
		}
		fmt.Fprintln(os.Stderr, "crash-after-ready: exiting on purpose")
		return 3
	case "orphan":
		// Leaves a grandchild behind: sh starts sleep in the background
		// and exits, so sleep is re-parented to the nearest subreaper.
		if !passGate() {
			return 1
		}
		if err := exec.Command("/bin/sh", "-c", "sleep 0.2 & exit 0").Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fallthrough
	case "garbage":
		// Writes malformed frames on the control channel (fd 3) before
		// serving: the supervisor must log them and carry on.
		if !passGate() {
			return 1
		}
		f := os.NewFile(3, "control")
		for _, frame := range [][]byte{{0xff}, {9, 1, 0, 0}, {1, 200, 0, 0}, {1, 1, 9, 0}, {1, 5, 1, 0, 3}} {
			if _, err := f.Write(frame); err != nil {
				fmt.Fprintln(os.Stderr, "garbage:", err)
			}
		}
		fallthrough
	case "slow-respawn":
		// Boots slowly once PREFORK_E2E_SLOW names a file that exists, so
		// that a test can hold the slot empty for a while.
		if _, err := os.Stat(os.Getenv("PREFORK_E2E_SLOW")); err == nil {
			time.Sleep(time.Second) // the boot time being simulated, not synchronisation
		}
		fallthrough
	case "serve":
		// A minimal worker: /pid only.
		ln, err := cluster.Listen(":0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, os.Getpid())
		})}
		go srv.Serve(ln)
		<-cluster.Drain()
		srv.Close()
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown role", role)
	return 2
}

// startRole starts the supervisor with workers that run this test binary in
// role, with env added to theirs. Each role waits at a gate, before what a
// test watches, until the harness follows the supervisor's events, so that
// no event the test waits for is missed; startRole returns once they may go.
func startRole(t testing.TB, role string, env []string, args ...string) *sup {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "gate")
	cmd := append([]string{"--", "/usr/bin/env", "PREFORK_E2E_ROLE=" + role, "PREFORK_E2E_GATE=" + gate}, env...)
	s := start(t, slices.Concat(args, cmd, []string{os.Args[0]})...)
	s.subscribed()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// passGate waits for the file PREFORK_E2E_GATE names, if it is set: the
// harness creates it once it follows the supervisor's events (startRole).
func passGate() bool {
	gate := os.Getenv("PREFORK_E2E_GATE")
	if gate != "" && !waitFile(gate, 10*time.Second) {
		fmt.Fprintln(os.Stderr, "gate", gate, "not opened within 10s")
		return false
	}
	return true
}

// waitFile waits up to d for path to exist (a role's side of a gate).
func waitFile(path string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond) // polling for the file
	}
}

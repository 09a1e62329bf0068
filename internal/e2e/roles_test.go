package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/prefork/prefork/cluster"
)

// runRole runs the test binary as a worker program of the given role.
func runRole(role string) int {
	switch role {
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
		fmt.Fprintln(os.Stderr, "crash-after-ready: exiting on purpose")
		return 3
	case "orphan":
		// Leaves a grandchild behind: sh starts sleep in the background
		// and exits, so sleep is re-parented to the nearest subreaper.
		if err := exec.Command("/bin/sh", "-c", "sleep 0.2 & exit 0").Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fallthrough
	case "garbage":
		// Writes malformed frames on the control channel (fd 3) before
		// serving: the supervisor must log them and carry on.
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

// roleCommand is the supervisor arguments that run this test binary as a
// worker in role.
func roleCommand(role string) []string {
	return []string{"--", "/usr/bin/env", "PREFORK_E2E_ROLE=" + role, os.Args[0]}
}

// Command supervisor is prefork's primary process: it binds the port, runs
// the workers, hands them connections and keeps them alive.
//
//	supervisor [flags] [-- COMMAND [ARGS...]]
//	supervisor ctl [-control PATH] [-json] status|reload|scale N|stop|events
//	supervisor probe [flags] [URL]
//	supervisor exec-shim -- PATH ARGV0 [ARGS...]   (internal: systemd-protocol workers)
package main

import (
	"os"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/probe"
	"github.com/prefork/prefork/internal/supervisor"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case supervisor.ShimCommand: // first: it runs between fork and a worker's exec
			os.Exit(supervisor.ExecShim(args[1:], os.Stderr))
		case "probe":
			os.Exit(probe.Main(args[1:], os.Stdout, os.Stderr))
		case "ctl":
			os.Exit(control.Main(args[1:], os.Stdout, os.Stderr))
		}
	}
	os.Exit(supervisor.Main(args, os.Stderr))
}

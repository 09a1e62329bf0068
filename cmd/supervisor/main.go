// Command supervisor is prefork's primary process: it binds the port, runs
// the workers, hands them connections and keeps them alive. It is a command
// line over package cluster/primary, which a Go program can also use
// to be its own primary (primary.ListenAndServe).
//
//	supervisor [flags] [-- COMMAND [ARGS...]]
//	supervisor ctl [-control PATH] [-json] status|reload|scale N|stop|events|upgrade [PATH]
//	supervisor -version
//	supervisor [-config FILE] [flags] -print-config
//	supervisor probe [flags] [URL]
//	supervisor exec-shim -- PATH ARGV0 [ARGS...]   (internal: systemd-protocol workers)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/probe"
	"github.com/prefork/prefork/internal/settings"
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
	os.Exit(run(args, os.Stderr))
}

// run runs the cluster primary that the flags describe and returns the
// exit status: 0 after a clean stop, 1 for a runtime failure, 2 for a usage
// error.
func run(args []string, stderr io.Writer) int {
	st, act, err := settings.ParseCommandLine(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, cluster.Usage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 2
	}
	switch act {
	case settings.ActionVersion:
		fmt.Println("prefork " + supervisor.Version)
		return 0
	case settings.ActionCheckUpgrade:
		return supervisor.CheckUpgrade(st, stderr)
	case settings.ActionPrintConfig:
		os.Stdout.Write(st.TOML())
		return 0
	}
	supervisor.AllowUpgrade() // ctl upgrade and SIGUSR2: this command re-executes in place
	// COMMAND (by default the worker binary beside this one) is
	// st.Command.
	// Run, not Start: nothing here reads the primary's Events.
	err = primary.Run(st)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, cluster.ErrUsage):
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "supervisor: %v\n", err)
	return 1
}

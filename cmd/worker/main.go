// Command worker is prefork's demo service: a chi app that serves /health,
// /pid, /heavy and /sleep. Under the supervisor it takes its connections
// from it; run alone (worker -listen :3000) it listens itself.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/internal/demo"
)

func main() {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	addr := fs.String("listen", ":3000", "`HOST:PORT` to listen on when run without a supervisor")
	perListener := fs.Bool("per-listener", false, "run one server per supervisor listener (cluster.ListenNamed), each naming itself in /health")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := run(*addr, *perListener); err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		os.Exit(1)
	}
}

// A release's name and defect, set at build time (-ldflags "-X
// main.build=v2 -X main.fault=errors=20"): /health shows the build, and
// demo.Fault says what a fault does. The canary reload tests build their
// releases this way.
var build, fault string

func run(addr string, perListener bool) error {
	flt, err := demo.ParseFault(fault)
	if err != nil {
		return err
	}
	flt.Arm()
	log, err := zap.NewProduction()
	if err != nil {
		return err
	}
	log = log.With(zap.Int("worker", cluster.ID()), zap.Int("pid", os.Getpid()))
	defer log.Sync()

	info := demo.Info{
		WorkerID:   cluster.ID(),
		Mode:       cluster.Mode(),
		Generation: cluster.Generation(),
		Started:    time.Now(),
		Claim:      cluster.Claim,
		Build:      build,
		Listener: func(r *http.Request) string {
			return cluster.ListenerName(r.Context().Value(http.LocalAddrContextKey))
		},
	}
	if !perListener {
		ln, err := cluster.Listen(addr)
		if err != nil {
			return err
		}
		router := demo.NewRouter(info, log)
		cluster.SetHealthCheck(func() error { return demo.CheckHealth(router) })
		return cluster.Serve(demo.NewServer(cluster.CountRequests(flt.Wrap(router)), log), ln)
	}
	// One server per listener: each says in /health the name it was
	// started for, not the connection's, so a connection routed to the
	// wrong server shows.
	names := cluster.ListenerNames()
	served := make(chan error, len(names))
	for i, name := range names {
		ln, err := cluster.ListenNamed(name, addr)
		if err != nil {
			return err
		}
		info.Listener = func(*http.Request) string { return name }
		router := demo.NewRouter(info, log.With(zap.String("listener", name)))
		if i == 0 {
			cluster.SetHealthCheck(func() error { return demo.CheckHealth(router) })
		}
		srv := demo.NewServer(cluster.CountRequests(flt.Wrap(router)), log)
		go func() { served <- cluster.Serve(srv, ln) }()
	}
	var first error
	for range names {
		if err := <-served; err != nil && first == nil {
			first = err
		}
	}
	return first
}

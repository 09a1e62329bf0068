// Command singlebinary is the benchmark's single-binary cluster: the demo
// service's router (the handler the go-single, rr, shared and reuseport
// rows serve) behind primary.ListenAndServe, so that this program is its
// own primary. Its row against the two-binary rows measures what being one
// binary costs, with nothing else different. It takes the supervisor's
// flags.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
	"github.com/prefork/prefork/internal/demo"
)

func main() {
	st, err := cluster.ParseSettings(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "singlebinary: %v\n", err)
		os.Exit(2)
	}
	router := demo.NewRouter(demo.Info{
		WorkerID:   cluster.ID(),
		Mode:       cluster.Mode(),
		Generation: cluster.Generation(),
		Started:    time.Now(),
	}, nil)
	cluster.SetHealthCheck(func() error { return demo.CheckHealth(router) })
	if err := primary.ListenAndServe(st.Listen.First(), router, primary.WithSettings(st)); err != nil {
		fmt.Fprintf(os.Stderr, "singlebinary: %v\n", err)
		os.Exit(1)
	}
}

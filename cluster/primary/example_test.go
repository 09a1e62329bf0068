package primary_test

import (
	"fmt"
	"net/http"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
)

// A program that is its own cluster: run by hand it is the primary, which
// starts this same program as its workers (one per CPU by default) and
// keeps them running; in each worker the same call serves mux. A SIGHUP
// to the primary reloads the workers from the binary on disk; SIGTERM
// stops them gracefully.
func ExampleListenAndServe() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d\n", cluster.ID())
	})
	if err := primary.ListenAndServe(":3000", mux, primary.WithWorkers(4), primary.WithMode(cluster.ModeRR)); err != nil {
		fmt.Println(err)
	}
}

// A primary with its own code, as in Node's cluster tutorial: it reads the
// workers' events and answers their messages. The workers run the else
// branch, sending with cluster.Send and receiving with cluster.Messages.
func ExampleStart() {
	if cluster.IsWorker() {
		go func() {
			for msg := range cluster.Messages() {
				fmt.Printf("worker %d: the primary says %s\n", cluster.ID(), msg)
			}
		}()
		cluster.Send([]byte("hello"))
		primary.ListenAndServe("", http.NotFoundHandler())
		return
	}
	p, err := primary.Start(cluster.DefaultSettings(), primary.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	for ev := range p.Events() {
		switch ev.Kind {
		case primary.EventListening:
			fmt.Printf("%s serves on %s\n", ev.Worker, ev.Address)
		case primary.EventMessage:
			ev.Worker.Send([]byte("welcome"))
		case primary.EventExit:
			fmt.Printf("%s exited: %s\n", ev.Worker, ev.Reason)
		}
	}
	if err := p.Wait(); err != nil {
		fmt.Println(err)
	}
}

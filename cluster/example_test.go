package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prefork/prefork/cluster"
)

// A worker serves on cluster.Listen and shuts down on cluster.Drain. Run
// without a supervisor, as here, Listen is a plain TCP listener on the
// address given.
func Example() {
	ln, err := cluster.Listen("127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: cluster.CountRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d (%s)", cluster.ID(), cluster.Mode())
	}))}
	go srv.Serve(ln)

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	// Under the supervisor: <-cluster.Drain() first.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fmt.Println(cluster.Shutdown(ctx, srv))
	// Output:
	// hello from worker 0 (standalone)
	// <nil>
}

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
	if err := cluster.ListenAndServe(":3000", mux, cluster.WithWorkers(4), cluster.WithMode(cluster.ModeRR)); err != nil {
		fmt.Println(err)
	}
}

// A primary with its own code, as in Node's cluster tutorial: it reads the
// workers' events and answers their messages. The workers run the else
// branch, sending with cluster.Send and receiving with cluster.Messages.
func ExampleStartPrimary() {
	if cluster.IsWorker() {
		go func() {
			for msg := range cluster.Messages() {
				fmt.Printf("worker %d: the primary says %s\n", cluster.ID(), msg)
			}
		}()
		cluster.Send([]byte("hello"))
		cluster.ListenAndServe("", http.NotFoundHandler())
		return
	}
	p, err := cluster.StartPrimary(cluster.DefaultSettings(), cluster.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	for ev := range p.Events() {
		switch ev.Kind {
		case cluster.EventListening:
			fmt.Printf("%s serves on %s\n", ev.Worker, ev.Address)
		case cluster.EventMessage:
			ev.Worker.Send([]byte("welcome"))
		case cluster.EventExit:
			fmt.Printf("%s exited: %s\n", ev.Worker, ev.Reason)
		}
	}
	if err := p.Wait(); err != nil {
		fmt.Println(err)
	}
}

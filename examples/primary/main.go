// Command primary is a cluster whose primary is the program's own code, as
// in Node's cluster tutorial: the workers count the requests they serve and
// report them to the primary in messages, and the primary adds them up and
// sends the total back to every worker.
//
//	go build -o counter ./examples/primary
//	./counter -listen :3000 -workers 2        # the supervisor's flags
//	curl localhost:3000/count                 # counts one request
//	curl localhost:3000/total                 # the cluster's total, as this worker last heard it
//
// The program's shape is Node's:
//
//	if cluster.IsPrimary() {
//		p, _ := primary.Start(settings)
//		for ev := range p.Events() { ... ev.Worker.Send(msg) ... }
//		p.Wait()
//	} else {
//		go report()                       // cluster.Send, and cluster.Messages
//		primary.ListenAndServe(addr, mux)
//	}
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
)

func main() {
	st, err := cluster.ParseSettings(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, cluster.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "primary: %v\n", err)
		os.Exit(2)
	}
	if cluster.IsPrimary() {
		err = lead(st)
	} else {
		err = worker(st.Listen.First())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "primary: %v\n", err)
		os.Exit(1)
	}
}

// lead is the primary: it adds up the counts the workers report and tells
// them the total.
func lead(st cluster.Settings) error {
	p, err := primary.Start(st)
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "primary: ", 0)
	total := 0
	for ev := range p.Events() {
		switch ev.Kind {
		case primary.EventListening:
			logger.Printf("%s listening on %s", ev.Worker, ev.Address)
		case primary.EventExit:
			logger.Printf("%s exited (%s)", ev.Worker, ev.Reason)
		case primary.EventMessage:
			n, err := strconv.Atoi(string(ev.Message))
			if err != nil || n < 0 {
				logger.Printf("%s sent %q, not a count", ev.Worker, ev.Message)
				continue
			}
			total += n
			msg := []byte(strconv.Itoa(total))
			for _, w := range p.Workers() {
				if err := w.Send(msg); err != nil && !errors.Is(err, primary.ErrNoWorker) {
					logger.Printf("%s: %v", w, err) // one that exited meanwhile needs no total
				}
			}
		}
	}
	return p.Wait()
}

// reportEvery is how often a worker sends its new requests to the primary:
// one message per interval, not one per request.
const reportEvery = 50 * time.Millisecond

// worker serves /count and /total, and exchanges counts with the primary.
func worker(addr string) error {
	var counted, total atomic.Int64
	go func() {
		sent := int64(0)
		tick := time.NewTicker(reportEvery)
		defer tick.Stop()
		for {
			select {
			case msg := <-cluster.Messages():
				if n, err := strconv.ParseInt(string(msg), 10, 64); err == nil {
					total.Store(n)
				}
			case <-tick.C:
				if n := counted.Load(); n > sent {
					if cluster.Send([]byte(strconv.FormatInt(n-sent, 10))) == nil {
						sent = n
					}
				}
			}
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", counted.Add(1))
	})
	mux.HandleFunc("GET /total", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", total.Load())
	})
	mux.HandleFunc("GET /pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getpid())
	})
	return primary.ListenAndServe(addr, mux)
}

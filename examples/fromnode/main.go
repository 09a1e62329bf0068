// Command fromnode is Node's cluster tutorial in Go, idiom for idiom: the
// primary forks its workers one by one, forks again when one dies, and
// counts the requests its workers report with one message each.
//
//	go run ./examples/fromnode -listen :3000 -workers 4
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
)

func main() {
	st, err := cluster.ParseSettings(os.Args[1:]) // -listen, -workers, ...
	if err != nil {
		log.Fatal(err)
	}
	if cluster.IsWorker() { // cluster.isWorker
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			cluster.Send([]byte("request")) // process.send({ cmd: 'notifyRequest' })
			fmt.Fprintf(w, "hello world from %d\n", os.Getpid())
		})
		mux.HandleFunc("/leave", func(w http.ResponseWriter, r *http.Request) {
			cluster.Disconnect() // cluster.worker.disconnect()
		})
		if err := primary.ListenAndServe(st.Listen.First(), mux); err != nil {
			log.Fatal(err)
		}
		return
	}
	n := st.Workers
	st.Workers, st.Respawn = 0, cluster.RespawnManual // the program forks, as in Node
	p, err := primary.Start(st)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for range n { // for (let i = 0; i < numCPUs; i++) cluster.fork();
		go p.Fork(ctx)
	}
	requests := 0
	for ev := range p.Events() {
		switch ev.Kind {
		case primary.EventListening: // cluster.on('listening', ...)
			fmt.Printf("worker %d listening\n", ev.Worker.PID())
		case primary.EventExit: // cluster.on('exit', (worker, code, signal) => ...)
			fmt.Printf("worker %d died (%d %s)\n", ev.Worker.PID(), ev.Code, ev.Signal)
			if !ev.Worker.ExitedAfterDisconnect() {
				go p.Fork(ctx)
			}
		case primary.EventMessage: // cluster.on('message', ...)
			requests++
		}
	}
	fmt.Printf("requests = %d\n", requests)
	if err := p.Wait(); err != nil {
		log.Fatal(err)
	}
}

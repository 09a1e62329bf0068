// Command singlebinary is a web service that is its own cluster: one
// binary that, run by hand, is the primary, and re-executes itself as its
// workers, as a Node script with cluster.isPrimary does.
//
//	go build -o app ./examples/singlebinary
//	./app -listen :3000 -workers 4 -mode rr   # the supervisor's flags
//	curl localhost:3000/pid                   # a worker's pid
//
// The whole of it is one call:
//
//	primary.ListenAndServe(":3000", mux)
//
// It serves / (a greeting with its version, worker ID and pid), /pid (the
// pid), /health (JSON) and /sleep?ms=N (answers after N milliseconds).
//
// A deploy replaces the binary and reloads, without failing a request:
//
//	go build -ldflags "-X main.version=v2" -o app.new ./examples/singlebinary
//	mv app.new app && kill -HUP $(pgrep -o app)
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
)

// version is what / says; set it with -ldflags "-X main.version=v2".
var version = "v1"

func main() {
	st, err := cluster.ParseSettings(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, cluster.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "singlebinary: %v\n", err)
		os.Exit(2)
	}
	if err := primary.ListenAndServe(st.Listen.First(), handler(), primary.WithSettings(st)); err != nil {
		fmt.Fprintf(os.Stderr, "singlebinary: %v\n", err)
		os.Exit(1)
	}
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s, worker %d, pid %d\n", version, cluster.ID(), os.Getpid())
	})
	mux.HandleFunc("GET /pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getpid())
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"status": "ok", "pid": os.Getpid(), "worker": cluster.ID(),
			"generation": cluster.Generation(), "version": version,
		})
	})
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(min(max(ms, 0), 10000)) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, os.Getpid())
	})
	return mux
}

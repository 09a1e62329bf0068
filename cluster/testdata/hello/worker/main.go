// Command worker is hello world as a worker of the prefork supervisor,
// with cluster.Listen and cluster.Serve (see TestWorkerSize).
package main

import (
	"fmt"
	"net/http"

	"github.com/prefork/prefork/cluster"
)

func main() {
	ln, err := cluster.Listen(":3000")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") })}
	cluster.Serve(srv, ln)
}

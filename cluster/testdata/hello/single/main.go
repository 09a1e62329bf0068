// Command single is hello world as its own cluster, with
// primary.ListenAndServe: the primary and its workers in one binary.
package main

import (
	"fmt"
	"net/http"

	"github.com/prefork/prefork/cluster/primary"
)

func main() {
	primary.ListenAndServe(":3000", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") }))
}

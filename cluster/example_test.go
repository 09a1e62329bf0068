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

// A worker runs one server per listener of the supervisor. Run without a
// supervisor, as here, there is one listener, named "", and ListenNamed
// listens on the address given.
func ExampleListenNamed() {
	for _, name := range cluster.ListenerNames() {
		ln, err := cluster.ListenNamed(name, "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "listener %q", name)
		})}
		go srv.Serve(ln)
		defer srv.Close()

		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// listener ""
}

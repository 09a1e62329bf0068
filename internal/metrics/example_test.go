package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/metrics"
)

func Example() {
	// The supervisor's owner goroutine answers this at each scrape.
	snapshot := func(ctx context.Context) (metrics.Snapshot, error) {
		return metrics.Snapshot{StateCounts: map[control.State]int{control.StateReady: 4}}, nil
	}
	m := metrics.New(snapshot)
	srv, err := metrics.Serve("127.0.0.1:0", m, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	m.ObserveHandoff(40 * time.Microsecond) // on the hot path

	resp, err := http.Get("http://" + srv.Addr() + "/metrics?name[]=prefork_workers")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	// Output:
	// # HELP prefork_workers Live worker processes by lifecycle state.
	// # TYPE prefork_workers gauge
	// prefork_workers{state="draining"} 0
	// prefork_workers{state="ready"} 4
	// prefork_workers{state="starting"} 0
}

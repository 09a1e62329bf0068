package primary

import (
	"net/http"
	"time"

	"github.com/prefork/prefork/cluster"
)

// ListenAndServe makes this program a cluster: Node's
// `if (cluster.isPrimary) fork() else serve` in one call.
//
// In the primary it listens on addr, whatever opts say ("" keeps their
// Settings.Listen), and runs cluster.DefaultSettings changed by opts, with
// this program as the workers, until a stop: see [Start]. A worker serves
// handler on cluster.Listen(addr), counting its requests
// (cluster.CountRequests) for Settings.MaxRequests and the heartbeats, and
// when its primary asks it to drain (a reload, a scale down, a stop) it
// finishes its connections and returns (cluster.Serve). ListenAndServe
// returns nil after a graceful stop, in both.
//
// A deploy is: build the new binary, move it into this program's path
// (mv, not cp over it: Linux refuses to write to a running executable,
// ETXTBSY), and send the primary SIGHUP. The reload starts the new binary,
// slot by slot, without failing a request.
func ListenAndServe(addr string, handler http.Handler, opts ...Option) error {
	if cluster.IsWorker() {
		return serve(addr, handler)
	}
	p, err := startPrimary(cluster.DefaultSettings(), true, withAddr(addr, opts)...)
	if err != nil {
		return err
	}
	return p.Wait()
}

// withAddr is opts followed by addr ("": none) as Settings.Listen: the
// address given wins over WithSettings' or any option's, unless it is
// their first listener's already (st.Listen.First(), as a program passes
// on its parsed flags): then all of those stay.
func withAddr(addr string, opts []Option) []Option {
	if addr == "" {
		return opts
	}
	return append(opts[:len(opts):len(opts)], func(st *cluster.Settings) {
		if st.Listen.First() != addr {
			st.Listen = cluster.Listeners{addr}
		}
	})
}

// readHeaderTimeout bounds how long a worker waits for a request's
// headers, against clients that connect and stall.
const readHeaderTimeout = 10 * time.Second

// serve is a worker's side of ListenAndServe.
func serve(addr string, handler http.Handler) error {
	ln, err := cluster.Listen(addr)
	if err != nil {
		return err
	}
	return cluster.Serve(&http.Server{Handler: cluster.CountRequests(handler), ReadHeaderTimeout: readHeaderTimeout}, ln)
}

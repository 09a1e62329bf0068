package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"
)

// Shutdown stops srv gracefully without dropping a request, then calls
// srv.Shutdown. Use it instead of srv.Shutdown after [Drain].
//
// http.Server.Shutdown drops a request that it reads after the shutdown
// began: a connection accepted just before, whose request was still on the
// way, is closed without an answer (net/http checks shuttingDown right after
// reading each request). A browser retries that on a reused connection, but
// not on a new one. Shutdown therefore first turns keep-alives off — idle
// connections close now, busy ones after their current response — and waits
// until every connection this worker accepted has closed, then shuts the
// server down, with nothing left to drop. ctx bounds the whole wait.
//
// A server run by [Serve] whose supervisor takes connections back keeps
// its keep-alives instead: each connection goes back to the supervisor
// when it is idle (see Serve), and the wait is for that.
func Shutdown(ctx context.Context, srv *http.Server) error {
	w, err := get()
	if err == nil && w.back != nil && w.back.wired(srv) {
		w.back.leaveAll()
	} else {
		srv.SetKeepAlivesEnabled(false)
	}
	if err == nil && w.ctl != nil {
		t := time.NewTicker(5 * time.Millisecond)
		for w.accepted.Load() > w.closed.Load() {
			select {
			case <-ctx.Done():
				t.Stop()
				return srv.Shutdown(ctx)
			case <-t.C:
			}
		}
		t.Stop()
	}
	if err == nil && w.back != nil && w.back.all.Load() {
		fmt.Fprintf(os.Stderr, "cluster: drained: %d connections handed back, %d could not be and closed\n",
			w.back.moved.Load(), w.back.failed.Load())
	}
	return srv.Shutdown(ctx)
}

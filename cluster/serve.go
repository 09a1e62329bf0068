package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// IsPrimary reports whether this process is not a worker started by a
// primary: Node's cluster.isPrimary. A program run by hand, or by systemd,
// is the primary.
func IsPrimary() bool { return !IsWorker() }

// ListenAndServe makes this program a cluster: Node's
// `if (cluster.isPrimary) fork() else serve` in one call.
//
// In the primary it listens on addr ("" keeps Settings.Listen) and runs
// [DefaultSettings] changed by opts, with this program as the workers,
// until a stop: see [StartPrimary]. A worker serves handler, counting its requests for
// Settings.MaxRequests and the heartbeats, and when its primary asks it to
// drain (a reload, a scale down, a stop) it finishes its connections and
// returns. ListenAndServe returns nil after a graceful stop, in both.
//
// A deploy is: build the new binary, move it into this program's path
// (mv, not cp over it: Linux refuses to write to a running executable,
// ETXTBSY), and send the primary SIGHUP. The reload starts the new binary,
// slot by slot, without failing a request.
func ListenAndServe(addr string, handler http.Handler, opts ...Option) error {
	if IsWorker() {
		return serve(addr, handler)
	}
	st := DefaultSettings()
	if addr != "" {
		st.Listen = addr
	}
	p, err := startPrimary(st, true, opts...)
	if err != nil {
		return err
	}
	return p.Wait()
}

// readHeaderTimeout bounds how long a worker waits for a request's
// headers, against clients that connect and stall.
const readHeaderTimeout = 10 * time.Second

// serve is a worker's side of ListenAndServe.
func serve(addr string, handler http.Handler) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return Serve(&http.Server{Handler: CountRequests(handler), ReadHeaderTimeout: readHeaderTimeout}, ln)
}

// Serve serves srv on ln (from [Listen]) until the supervisor asks this
// worker to drain, or, run standalone, until SIGTERM or SIGINT; then it
// shuts srv down gracefully within [DrainTimeout] and returns nil. It
// returns srv.Serve's error if serving fails first. Wrap srv's handler in
// [CountRequests] for -max-requests and the latency figures.
func Serve(srv *http.Server, ln net.Listener) error {
	// SIGTERM and SIGINT are caught while serving: run standalone they
	// are the stop signal; under a supervisor the drain arrives over IPC,
	// and a SIGTERM still stops the worker as gracefully.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-Drain():
	case <-sigs:
	case err := <-served:
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), DrainTimeout())
	defer cancel()
	if err := Shutdown(ctx, srv); err != nil {
		return fmt.Errorf("cluster: shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

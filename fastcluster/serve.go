package fastcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/prefork/prefork/cluster"
)

// ListenAndServe serves srv on the listener [cluster.Listen] returns for
// addr (ignored under the supervisor, which alone decides the address),
// counting its requests with [CountRequests], until the supervisor asks
// this worker to drain: see [Serve].
func ListenAndServe(addr string, srv *fasthttp.Server) error {
	ln, err := cluster.Listen(addr)
	if err != nil {
		return err
	}
	srv.Handler = CountRequests(srv.Handler)
	return Serve(srv, ln)
}

// Serve serves srv on ln (from [cluster.Listen]) until the supervisor asks
// this worker to drain, or, run standalone, until SIGTERM or SIGINT; then
// it shuts srv down with ShutdownWithContext within
// [cluster.DrainTimeout]: every request that arrived is answered, and
// Serve returns nil. It returns srv.Serve's error if serving fails first.
// Wrap srv's handler in [CountRequests] for -max-requests and the latency
// figures.
//
// Serve sets srv.CloseOnShutdown, so that a response written during the
// drain says "Connection: close" and its client sends the next request on
// a new connection, to another worker.
func Serve(srv *fasthttp.Server, ln net.Listener) error {
	srv.CloseOnShutdown = true
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(retrying{ln}) }()
	select {
	case <-cluster.Drain():
	case <-sigs:
	case err := <-served:
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cluster.DrainTimeout())
	defer cancel()
	// ShutdownWithContext closes ln, so srv.Serve returns nil; then it
	// waits for the connections in flight, closing each after its current
	// response.
	if err := srv.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("fastcluster: shutdown: %w", err)
	}
	return <-served
}

// retrying retries an accept error the listener calls temporary (out of
// descriptors in shared and reuseport mode), backing off as net/http
// does. fasthttp retries only timeouts and would end Serve, and the worker
// with it, on the first EMFILE.
type retrying struct{ net.Listener }

func (l retrying) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		te, ok := err.(interface{ Temporary() bool })
		if err == nil || !ok || !te.Temporary() {
			return c, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		time.Sleep(delay)
	}
}

// CountRequests wraps h so that heartbeats report the requests it serves
// (and -max-requests recycling can count them) and, to a supervisor that
// asks for it, how long h took to serve each and its status class, which a
// canary reload judges a release by: [cluster.RequestServedStatus] for
// every request.
func CountRequests(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	if !cluster.IsWorker() {
		return h
	}
	return func(ctx *fasthttp.RequestCtx) {
		// The time fasthttp read its clock at just before calling the
		// handler (or now, with LazyRequestTime): one clock read a
		// request fewer than time.Now here.
		start := ctx.Time()
		h(ctx)
		cluster.RequestServedStatus(time.Since(start), ctx.Response.StatusCode())
	}
}

// HealthCheck returns a check for [cluster.SetHealthCheck] that runs h in
// process (no network) on GET path and fails unless it answers 200. A
// handler that hangs hangs the check, and the heartbeats stop: the
// supervisor takes that for a hung worker. A panic in h is an error.
func HealthCheck(h fasthttp.RequestHandler, path string) func() error {
	return func() (err error) {
		var req fasthttp.Request
		req.Header.SetMethod(fasthttp.MethodGet)
		req.SetRequestURI(path)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, nil, nil)
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("fastcluster: health check %s: handler panicked: %v", path, v)
			}
		}()
		h(&ctx)
		if code := ctx.Response.StatusCode(); code != fasthttp.StatusOK {
			return fmt.Errorf("fastcluster: health check %s: status %d, want 200", path, code)
		}
		return nil
	}
}

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
)

// IsPrimary reports whether this process is not a worker started by a
// primary: Node's cluster.isPrimary. A program run by hand, or by systemd,
// is the primary.
func IsPrimary() bool { return !IsWorker() }

// Serve serves srv on ln (from [Listen]) until the supervisor asks this
// worker to drain, or, run standalone, until SIGTERM or SIGINT; then it
// shuts srv down gracefully within [DrainTimeout] and returns nil. It
// returns srv.Serve's error if serving fails first. Wrap srv's handler in
// [CountRequests] for -max-requests and the latency figures.
//
// In rr mode, when the supervisor can take them, the drain hands HTTP/1.1
// connections idle between requests back to the supervisor, which gives
// them to another worker, instead of closing them: their clients never see
// the reload. A connection busy with a request goes back after its
// response; TLS and hijacked connections never move. For that Serve sets
// srv's ConnState hook, which calls the one srv had.
func Serve(srv *http.Server, ln net.Listener) error {
	// SIGTERM and SIGINT are caught while serving: run standalone they
	// are the stop signal; under a supervisor the drain arrives over IPC,
	// and a SIGTERM still stops the worker as gracefully.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if w := handBackOf(ln); w != nil {
		w.back.wire(srv) // idle connections go back when it drains
	}
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

// handBackOf is the worker of ln if it is a listener of this package
// (Listen's or ListenNamed's) and hands connections back.
func handBackOf(ln net.Listener) *worker {
	var w *worker
	switch l := ln.(type) {
	case *listener:
		w = l.w
	case *namedListener:
		w = l.d.base.w
	}
	if w == nil || w.back == nil {
		return nil
	}
	return w
}

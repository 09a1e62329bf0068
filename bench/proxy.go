package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// The rr-proxy and rr-sticky-ip rows load the supervisor as a load balancer
// speaking PROXY protocol would: bench/proxy.lua starts every connection
// with a PROXY v1 header naming one of 512 client addresses. wrk has no
// per-connection hook, so with keep-alive the script relies on each
// connection's first request being among its thread's first calls (see
// the script); checkProxy verifies it after every measured run from the
// supervisor's own counters, and a run that breaks it fails.

// proxyArgs gives bench/proxy.lua its arguments: the load and how many
// connections each wrk thread has (wrk gives each -c/-t).
func proxyArgs(argv []string, ld wrkLoad, conns, threads int) []string {
	return append(argv, "--", ld.name, itoa(conns/threads))
}

// proxyCounts are the supervisor's counters of connections it routed
// after reading their PROXY header, and of connections it closed for it.
type proxyCounts struct {
	placed   uint64 // sent to a worker, by key or by the balance
	rejected uint64 // closed: a bad header, or none before the close
}

// readProxyCounts asks the supervisor listening on port for its counters,
// over its default control socket.
func readProxyCounts(ctx context.Context, port int) (proxyCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, control.DefaultPath(addr(port)), control.Request{Cmd: control.CmdStatus})
	switch {
	case err != nil:
		return proxyCounts{}, fmt.Errorf("bench: PROXY counters: %w", err)
	case !resp.OK || resp.Status == nil || resp.Status.Sticky == nil:
		return proxyCounts{}, fmt.Errorf("bench: PROXY counters: no sticky status in the supervisor's answer (%s)", resp.Error)
	}
	st := resp.Status.Sticky
	return proxyCounts{placed: st.Hits + st.Fallbacks, rejected: st.ProxyRejected}, nil
}

// checkProxy says whether a measured run sent every header where it
// belongs, from the counters before and after it and wrk's result. A
// connection whose first request lacks the header is refused (counted);
// a header in a later request is a malformed request, answered 400 (a wrk
// error). wrk itself opens one connection that sends nothing, to see that
// the server answers, before it starts; with Connection: close the
// connections that were open but had not written yet when wrk stopped close
// without a header too, up to one each, and those of the warm-up run just
// before may be counted in this one. With keep-alive, connections routed is
// no count of connections: rr routes idle ones again when it rebalances.
func checkProxy(before, after proxyCounts, res wrkResult, ld wrkLoad, conns int) error {
	placed, rejected := after.placed-before.placed, after.rejected-before.rejected
	if res.errors() > 0 {
		return fmt.Errorf("bench: PROXY run: %d errors: a header was not on a connection's first request", res.errors())
	}
	if !ld.close {
		if rejected > 1 {
			return fmt.Errorf("bench: PROXY run with keep-alive: %d connections refused for their header, want at most 1 (wrk's probe): wrk reconnected", rejected)
		}
		return nil
	}
	if unused := uint64(2 * (1 + conns)); rejected > unused {
		return fmt.Errorf("bench: PROXY run: %d connections refused for their header (at most %d closed unused)", rejected, unused)
	}
	if placed < uint64(res.requests) {
		return fmt.Errorf("bench: PROXY run: %d connections routed for %d requests", placed, res.requests)
	}
	return nil
}

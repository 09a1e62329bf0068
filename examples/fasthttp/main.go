// Command fasthttp-worker serves the demo worker's routes on fasthttp, as a
// worker of the prefork supervisor through package fastcluster:
//
//	GET /health      200, JSON: status, pid, worker, mode, generation, uptime_s, goroutines
//	GET /pid         the serving process ID, as plain text
//	GET /spin?us=N   spends N µs of its thread's CPU time (0..100000)
//	GET /sleep?ms=N  holds the request for N ms (0..60000)
//
// Under the supervisor (make run-fasthttp) it takes its connections from
// it; run alone it listens on -listen itself. With -fasthttp-prefork it
// runs the same server under fasthttp's own prefork package instead (what
// Fiber's EnablePrefork does): the benchmark's reference, with the same
// handler.
//
// It is its own module, so that prefork's module does not depend on
// fasthttp.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/prefork"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/fastcluster"
	"github.com/prefork/prefork/internal/spin"
)

func main() {
	fs := flag.NewFlagSet("fasthttp-worker", flag.ContinueOnError)
	addr := fs.String("listen", ":3000", "`HOST:PORT` to listen on when run without a supervisor")
	own := fs.Bool("fasthttp-prefork", false, "run under fasthttp's own prefork package (one SO_REUSEPORT child per GOMAXPROCS) instead of prefork's supervisor")
	recover := fs.Int("recover-threshold", 0, "with -fasthttp-prefork: child exits its master survives (0: fasthttp's default, GOMAXPROCS/2)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *recover < 0 {
		fmt.Fprintln(os.Stderr, "fasthttp-worker: -recover-threshold must be ≥ 0")
		os.Exit(2)
	}
	if err := run(*addr, *own, *recover); err != nil {
		fmt.Fprintf(os.Stderr, "fasthttp-worker: %v\n", err)
		os.Exit(1)
	}
}

func run(addr string, own bool, recoverThreshold int) error {
	mode := cluster.Mode()
	if own {
		mode = "fasthttp-prefork"
	}
	h := handler(info{worker: cluster.ID(), mode: mode, generation: cluster.Generation(), started: time.Now()})
	srv := &fasthttp.Server{Handler: h, Name: "fasthttp-worker", ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	if own {
		p := prefork.New(srv)
		p.Reuseport = true
		if recoverThreshold > 0 {
			p.RecoverThreshold = recoverThreshold
		}
		return p.ListenAndServe(addr)
	}
	cluster.SetHealthCheck(fastcluster.HealthCheck(h, "/health"))
	return fastcluster.ListenAndServe(addr, srv)
}

// info describes the process serving the routes.
type info struct {
	worker, generation int
	mode               string
	started            time.Time
}

// Bounds of /spin's us (100ms of CPU) and /sleep's ms.
const (
	maxSpinUS  = 100_000
	maxSleepMS = 60_000
)

// handler routes the demo's requests. /health and /pid sit on the load
// tests' hot path: their constant parts are made once, here.
func handler(in info) fasthttp.RequestHandler {
	pid := os.Getpid()
	pidBody := strconv.AppendInt(nil, int64(pid), 10)
	prefix := fmt.Appendf(nil, `{"status":"ok","pid":%d,"worker":%d,"mode":%q,"generation":%d,"uptime_s":`,
		pid, in.worker, in.mode, in.generation)
	return func(ctx *fasthttp.RequestCtx) {
		if !ctx.IsGet() {
			ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
			return
		}
		switch string(ctx.Path()) {
		case "/health":
			var num [24]byte
			ctx.SetContentType("application/json")
			ctx.Write(prefix)
			ctx.Write(strconv.AppendFloat(num[:0], time.Since(in.started).Seconds(), 'f', 3, 64))
			ctx.WriteString(`,"goroutines":`)
			ctx.Write(strconv.AppendInt(num[:0], int64(runtime.NumGoroutine()), 10))
			ctx.WriteString("}\n")
		case "/pid":
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBody(pidBody)
		case "/spin":
			us, ok := uintArg(ctx, "us", maxSpinUS)
			if !ok {
				return
			}
			if err := spin.Thread(time.Duration(us) * time.Microsecond); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
				return
			}
			ctx.SetContentType("application/json")
			fmt.Fprintf(ctx, `{"spun_us":%d,"pid":%d}`, us, pid)
		case "/sleep":
			ms, ok := uintArg(ctx, "ms", maxSleepMS)
			if !ok {
				return
			}
			time.Sleep(time.Duration(ms) * time.Millisecond)
			ctx.SetContentType("application/json")
			fmt.Fprintf(ctx, `{"slept_ms":%d,"pid":%d}`, ms, pid)
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}
}

// uintArg returns the query argument name, an integer in 0..most, or
// answers 400 and returns false.
func uintArg(ctx *fasthttp.RequestCtx, name string, most int) (int, bool) {
	n, err := ctx.QueryArgs().GetUint(name)
	if err != nil || n > most {
		ctx.Error(fmt.Sprintf("%s: want an integer in 0..%d", name, most), fasthttp.StatusBadRequest)
		return 0, false
	}
	return n, true
}

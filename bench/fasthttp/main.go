// Command fasthttp-prefork is the benchmark's reference for the pre-forking
// that Go web frameworks offer today: fasthttp's prefork package (which
// Fiber's EnablePrefork uses), serving /health and /pid as the demo worker
// does. The program re-executes itself as GOMAXPROCS children that each
// bind the port with SO_REUSEPORT. It is its own module, so that prefork's
// module does not depend on fasthttp.
//
//	fasthttp-prefork -listen 127.0.0.1:3000
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/prefork"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:3000", "`HOST:PORT` to listen on")
	flag.Parse()
	pid := os.Getpid()
	started := time.Now()
	pidBody := []byte(strconv.Itoa(pid))
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch string(ctx.Path()) {
			case "/health":
				// The fields of the demo worker's /health that do not
				// need prefork's cluster package.
				ctx.SetContentType("application/json")
				json.NewEncoder(ctx).Encode(map[string]any{
					"status":     "ok",
					"pid":        pid,
					"worker":     0,
					"mode":       "fasthttp-prefork",
					"generation": 0,
					"uptime_s":   time.Since(started).Seconds(),
					"goroutines": runtime.NumGoroutine(),
				})
			case "/pid":
				ctx.Write(pidBody)
			default:
				ctx.SetStatusCode(fasthttp.StatusNotFound)
			}
		},
		Name: "fasthttp-prefork",
	}
	p := prefork.New(srv)
	p.Reuseport = true
	if err := p.ListenAndServe(*addr); err != nil {
		fmt.Fprintf(os.Stderr, "fasthttp-prefork: %v\n", err)
		os.Exit(1)
	}
}

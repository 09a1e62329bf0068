// Command sdsocket is the benchmark's "one Go process restarted behind a
// systemd socket": what systemctl restart does to a Type=simple service
// whose socket a .socket unit holds, without systemd. The manager binds
// 127.0.0.1:PORT once and starts itself as the service with that socket at
// fd 3 (LISTEN_FDS=1, as systemd passes it). SIGHUP restarts the service as
// systemd does: SIGTERM, wait for its exit, start a new one on the same
// socket; meanwhile connections wait in the socket's backlog. The service
// serves the demo router (the handler of every Go row) with net/http, and
// on SIGTERM calls http.Server.Shutdown, as a Go service does: idle
// keep-alive connections are closed, busy ones after their response.
//
//	sdsocket -listen 127.0.0.1:PORT
//
// It logs JSON lines on stderr: "all workers ready", then "restart done"
// after each restart. SIGTERM stops it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/demo"
)

func main() {
	if os.Getenv("LISTEN_FDS") == "1" {
		os.Exit(service())
	}
	addr := flag.String("listen", "127.0.0.1:3000", "`HOST:PORT` to bind")
	flag.Parse()
	os.Exit(manager(*addr))
}

func logLine(msg string, kv ...any) {
	m := map[string]any{"level": "info", "ts": time.Now().Format(time.RFC3339Nano), "logger": "sdsocket", "msg": msg}
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	os.Stderr.Write(append(b, '\n'))
}

// manager holds the socket and restarts the service on SIGHUP.
func manager(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdsocket:", err)
		return 1
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdsocket:", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	start := func() (*exec.Cmd, error) {
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), "LISTEN_FDS=1")
		cmd.ExtraFiles = []*os.File{f} // fd 3
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		return cmd, cmd.Start()
	}
	cur, err := start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdsocket:", err)
		return 1
	}
	logLine("all workers ready", "workers", 1)
	for s := range sigs {
		cur.Process.Signal(syscall.SIGTERM)
		cur.Wait()
		if s != syscall.SIGHUP {
			return 0
		}
		if cur, err = start(); err != nil {
			fmt.Fprintln(os.Stderr, "sdsocket:", err)
			return 1
		}
		logLine("restart done", "pid", cur.Process.Pid)
	}
	return 0
}

// service serves the demo router on fd 3 until SIGTERM, then Shutdown.
func service() int {
	ln, err := net.FileListener(os.NewFile(3, "listen"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdsocket service:", err)
		return 1
	}
	srv := demo.NewServer(demo.NewRouter(demo.Info{Mode: "standalone"}, nil), nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "sdsocket service:", err)
		return 1
	}
	<-shut // Serve returns as Shutdown begins; its requests finish first
	return 0
}

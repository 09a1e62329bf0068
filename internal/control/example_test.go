package control_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/prefork/prefork/internal/control"
)

func ExampleCall() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	srv, err := control.Listen(filepath.Join(dir, "ctl.sock"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error)
	go func() {
		served <- srv.Serve(control.HandlerFunc(func(ctx context.Context, req control.Request) control.Response {
			return control.Response{OK: true, Message: "reloaded 2 workers in 85ms"}
		}), nil)
	}()

	resp, err := control.Call(context.Background(), srv.Path(), control.Request{Cmd: control.CmdReload})
	fmt.Println(resp.Message, err)
	srv.Close()
	fmt.Println(<-served)
	// Output:
	// reloaded 2 workers in 85ms <nil>
	// <nil>
}

func ExampleWriteStatus() {
	control.WriteStatus(os.Stdout, &control.Status{
		PID: 4242, Listen: "127.0.0.1:3000", Mode: "reuseport", Generation: 2, UptimeS: 95.2,
		Workers: []control.WorkerStatus{
			{Slot: 0, PID: 4250, Generation: 2, State: "ready", UptimeS: 31.5, OpenConns: 3, Requests: 1200, RSSBytes: 9 << 20, CPUPercent: 0.7, HeartbeatAgeS: 0.2},
			{Slot: 0, PID: 4243, Generation: 1, State: "draining", UptimeS: 95.1, Restarts: 1, OpenConns: 1, Requests: 80211, RSSBytes: 14 << 20, CPUPercent: 0.1, HeartbeatAgeS: 1.1},
		},
	})
	// Output:
	// supervisor pid=4242 listen=127.0.0.1:3000 mode=reuseport generation=2 uptime=1m35s workers=2
	// SLOT  PID   GEN  STATE     UPTIME  RESTARTS  CONNS  REQUESTS  REQ/S  P50  P99  RSS      CPU%  BEAT
	// 0     4250  2    ready     31.5s   0         3      1200      0.0    -    -    9.0MiB   0.7   0.2s ago
	// 0     4243  1    draining  1m35s   1         1      80211     0.0    -    -    14.0MiB  0.1   1.1s ago
}

package primary

import (
	"context"
	"errors"
	"fmt"
	"github.com/prefork/prefork/cluster"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The Node idioms of the README's "Coming from Node" table, each run with
// real worker processes: this test binary, re-executed as the helper
// named in nodeHelpers.

// nodeHelpers are the worker programs of these tests, by helperEnv.
var nodeHelpers = map[string]func(){
	"counter": helperCounter,
	"flood":   helperFlood,
	"leaver":  helperLeaver,
	"linger":  helperLinger,
}

// helperLinger takes a second and a half to exit once asked to drain, as
// a worker finishing long requests does.
func helperLinger() {
	ln, err := cluster.Listen("")
	if err != nil {
		os.Exit(1)
	}
	go http.Serve(ln, http.NotFoundHandler())
	<-cluster.Drain()
	time.Sleep(1500 * time.Millisecond) // the worker's own pace, not a test's synchronisation
	os.Exit(0)
}

// helperLeaver serves until the primary sends it "leave": then it
// disconnects itself, as Node's cluster.worker.disconnect() does.
func helperLeaver() {
	go func() {
		for msg := range cluster.Messages() {
			if string(msg) == "leave" {
				if err := cluster.Disconnect(); err != nil {
					fmt.Fprintln(os.Stderr, "leaver:", err)
					os.Exit(1)
				}
			}
		}
	}()
	if err := ListenAndServe("", http.NotFoundHandler()); err != nil {
		os.Exit(1)
	}
}

// helperFlood sends as many messages as each message from the primary
// says, as fast as Send lets it.
func helperFlood() {
	go func() {
		for msg := range cluster.Messages() {
			n, _ := strconv.Atoi(string(msg))
			for range n {
				if err := cluster.Send([]byte("x")); err != nil {
					fmt.Fprintln(os.Stderr, "flood:", err)
					os.Exit(1)
				}
			}
		}
	}()
	if err := ListenAndServe("", http.NotFoundHandler()); err != nil {
		os.Exit(1)
	}
}

// helperCounter is the tutorial's worker: one cluster.Send per request.
func helperCounter() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := cluster.Send([]byte("1")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "counted\n")
	})
	if err := ListenAndServe("", h); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
}

// nodeSettings are a primary's settings for these tests: loopback, no
// control socket, this test binary as the workers running helper.
func nodeSettings(t *testing.T, helper string, workers int) cluster.Settings {
	t.Setenv(helperEnv, helper) // the workers inherit the environment
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	st := cluster.DefaultSettings()
	st.Listen, st.Workers, st.Control, st.Sched = cluster.Listeners{"127.0.0.1:0"}, workers, "none", "normal"
	st.Grace, st.LogFormat = 5*time.Second, "json"
	st.Command = []string{os.Args[0]}
	return st
}

// startReady starts a primary with st and waits for start-up; it is
// stopped when the test ends.
func startReady(t *testing.T, st cluster.Settings) *Primary {
	t.Helper()
	p, err := Start(st)
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// stopAfter stops p when the test ends, and checks it stopped cleanly.
func stopAfter(t *testing.T, p *Primary) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
}

// next returns the next event of kind, failing the test after d.
func next(t *testing.T, p *Primary, kind EventKind, d time.Duration) Event {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-p.Events():
			if !ok {
				t.Fatalf("events ended waiting for %s", kind)
			}
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within %s", kind, d)
		}
	}
}

// The tutorial's counter: 10,000 requests over 8 keep-alive clients, each
// request one cluster.Send in its worker, and the primary's count of
// EventMessage is exact, with nothing dropped. Before messages were
// flow-controlled, the primary got about 7% of them and every Send
// returned nil.
func TestNodeCounter(t *testing.T) {
	const requests, clients = 10000, 8
	p, err := Start(nodeSettings(t, "counter", 2))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, p)
	for range 2 {
		next(t, p, EventListening, 20*time.Second)
	}
	failed := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for range requests / clients {
				resp, err := c.Get("http://" + p.Addr() + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					failed <- err
					return
				}
			}
		}()
	}
	served := make(chan struct{})
	go func() { wg.Wait(); close(served) }()
	counted := 0
	deadline := time.After(60 * time.Second)
	for counted < requests {
		select {
		case ev := <-p.Events():
			if ev.Kind == EventMessage {
				counted++
			}
		case err := <-failed:
			t.Fatalf("a client failed after %d counted: %v", counted, err)
		case <-deadline:
			t.Fatalf("counted %d of %d within 60s (dropped %d)", counted, requests, p.Dropped())
		}
	}
	<-served
	if p.Dropped() != 0 {
		t.Fatalf("counted %d, dropped %d", counted, p.Dropped())
	}
}

// The throughput of worker-to-primary messages: one worker sends b.N
// messages as fast as Send lets it, and the primary's reader of Events
// takes them all.
func BenchmarkMessages(b *testing.B) {
	b.Setenv(helperEnv, "flood")
	b.Setenv("GORACE", "atexit_sleep_ms=0")
	st := cluster.DefaultSettings()
	st.Listen, st.Workers, st.Control, st.Sched, st.LogFormat = cluster.Listeners{"127.0.0.1:0"}, 1, "none", "normal", "json"
	st.Command = []string{os.Args[0]}
	p, err := Start(st)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p.Stop(ctx)
	}()
	var w *Worker
	for w == nil {
		if ev := <-p.Events(); ev.Kind == EventListening {
			w = ev.Worker
		}
	}
	b.ResetTimer()
	if err := w.Send([]byte(strconv.Itoa(b.N))); err != nil {
		b.Fatal(err)
	}
	for got := 0; got < b.N; {
		if ev := <-p.Events(); ev.Kind == EventMessage {
			got++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if p.Dropped() != 0 {
		b.Fatalf("%d dropped", p.Dropped())
	}
}

// Node's start-up: a primary with no workers, a Fork per worker, then
// Ready; each Fork returns a ready worker in the next slot.
func TestNodeStartupLoop(t *testing.T) {
	p, err := Start(nodeSettings(t, "counter", 0))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		w, err := p.Fork(ctx)
		if err != nil {
			t.Fatalf("fork %d: %v", i, err)
		}
		if w.ID() != i || w.State() != StateReady {
			t.Fatalf("fork %d: %s in state %s, want ID %d, ready", i, w, w.State(), i)
		}
	}
	if err := p.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if ws := p.Workers(); len(ws) != 3 {
		t.Fatalf("workers %v, want 3", ws)
	}
	resp, err := http.Get("http://" + p.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// exitAndFork is Node's cluster.on('exit', () => cluster.fork()): it
// kills n workers at once (kill -9 from outside), forks once for each exit
// event, and returns the exit events.
func exitAndFork(t *testing.T, p *Primary, n int) []Event {
	t.Helper()
	ws := p.Workers()
	for _, w := range ws[:n] {
		syscall.Kill(w.PID(), syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var exits []Event
	for len(exits) < n {
		ev := next(t, p, EventExit, 20*time.Second)
		exits = append(exits, ev)
		if _, err := p.Fork(ctx); err != nil {
			t.Fatalf("Fork in answer to %s's exit: %v", ev.Worker, err)
		}
	}
	return exits
}

// Under cluster.RespawnManual the primary only reports the exit, and the
// program's Fork brings the cluster back to its size.
func TestNodeExitAndForkManual(t *testing.T) {
	st := nodeSettings(t, "counter", 2)
	st.Respawn = cluster.RespawnManual
	p := startReady(t, st)
	for _, ev := range exitAndFork(t, p, 2) {
		if ev.Reason != "crash" || ev.Signal != "SIGKILL" || ev.Worker.ExitedAfterDisconnect() {
			t.Errorf("exit of %s: reason %q signal %q after disconnect %v, want crash, SIGKILL, false",
				ev.Worker, ev.Reason, ev.Signal, ev.Worker.ExitedAfterDisconnect())
		}
	}
	if ws := p.Workers(); len(ws) != 2 || ws[0].ID() != 1 || ws[1].ID() != 2 {
		t.Fatalf("workers %v after two exits and two Forks, want slots 1 and 2", ws)
	}
}

// Under cluster.RespawnAuto (the default) the same program keeps the cluster at
// its size: each Fork takes the primary's own respawn, and two crashes at
// once make neither Fork fail.
func TestNodeExitAndForkAuto(t *testing.T) {
	p := startReady(t, nodeSettings(t, "counter", 3))
	exitAndFork(t, p, 2)
	if ws := p.Workers(); len(ws) != 3 {
		t.Fatalf("workers %v after two exits and two Forks, want 3", ws)
	}
}

// Intended exits are not crashes: a worker that disconnects itself, and
// Kill(SIGTERM) of a worker that then exits cleanly, many times over a
// crash budget of 1, leave ExitedAfterDisconnect true and the primary
// running.
func TestNodeIntendedExits(t *testing.T) {
	st := nodeSettings(t, "leaver", 1)
	st.MaxCrashes = 1
	p := startReady(t, st)
	w := p.Workers()[0]
	if err := w.Send([]byte("leave")); err != nil {
		t.Fatal(err)
	}
	ev, w := exitAndReplacement(t, p, w)
	if ev.Reason != "disconnect" || ev.Code != 0 || !ev.Worker.ExitedAfterDisconnect() {
		t.Fatalf("exit of %s: reason %q code %d after disconnect %v, want disconnect, 0, true", ev.Worker, ev.Reason, ev.Code, ev.Worker.ExitedAfterDisconnect())
	}
	for range 3 {
		if err := w.Kill(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ev, w = exitAndReplacement(t, p, w)
		if ev.Reason != "kill" || !ev.Worker.ExitedAfterDisconnect() {
			t.Fatalf("exit of %s after Kill: reason %q after disconnect %v, want kill, true", ev.Worker, ev.Reason, ev.Worker.ExitedAfterDisconnect())
		}
	}
}

// exitAndReplacement waits for old's exit and for its replacement's
// listening event, in either order: the replacement of a worker that
// leaves on purpose can be ready before the old one's exit is reaped.
func exitAndReplacement(t *testing.T, p *Primary, old *Worker) (exit Event, replacement *Worker) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for exit.Worker == nil || replacement == nil {
		select {
		case ev, ok := <-p.Events():
			if !ok {
				t.Fatalf("events ended waiting for the exit and replacement of %s", old)
			}
			switch {
			case ev.Kind == EventExit && ev.Worker == old:
				exit = ev
			case ev.Kind == EventExit:
				t.Fatalf("exit of %s, want only %s to exit", ev.Worker, old)
			case ev.Kind == EventListening && ev.Worker != old:
				replacement = ev.Worker
			}
		case <-deadline:
			t.Fatalf("no exit of %s and listening replacement within 20s (exit seen: %v, replacement: %v)", old, exit.Worker != nil, replacement)
		}
	}
	return exit, replacement
}

// A draining worker is told apart from its replacement in Workers: the
// same ID, and State draining against starting or ready.
func TestNodeWorkersState(t *testing.T) {
	p := startReady(t, nodeSettings(t, "linger", 1))
	w := p.Workers()[0]
	if w.State() != StateReady {
		t.Fatalf("%s: want ready", w)
	}
	if err := w.Disconnect(); err != nil {
		t.Fatal(err)
	}
	ws := p.Workers()
	if len(ws) != 2 || ws[0].ID() != 1 || ws[1].ID() != 1 {
		t.Fatalf("workers %v just after Disconnect, want the old one and its replacement in slot 1", ws)
	}
	var draining, other int
	for _, x := range ws {
		switch {
		case x == w && x.State() == StateDraining:
			draining++
		case x != w && (x.State() == StateStarting || x.State() == StateReady):
			other++
		}
	}
	if draining != 1 || other != 1 {
		t.Fatalf("workers %v: want %s draining and a new one starting or ready", ws, w)
	}
	if ev := next(t, p, EventExit, 20*time.Second); ev.Worker != w || w.State() != StateExited {
		t.Fatalf("exit of %s, want %s exited", ev.Worker, w)
	}
}

// ListenAndServe's addr wins over the cluster.Settings given with WithSettings.
func TestListenAndServeAddrWins(t *testing.T) {
	st := cluster.DefaultSettings()
	st.Listen = cluster.Listeners{":4000"}
	for _, tc := range []struct{ addr, want string }{{"127.0.0.1:5000", "127.0.0.1:5000"}, {"", ":4000"}} {
		have := cluster.DefaultSettings()
		for _, o := range withAddr(tc.addr, []Option{WithSettings(st)}) {
			o(&have)
		}
		if have.Listen.String() != tc.want {
			t.Errorf("ListenAndServe(%q, h, WithSettings(Listen :4000)) listens on %q, want %q", tc.addr, have.Listen.String(), tc.want)
		}
	}
}

// A message over cluster.MaxMessage is cluster.ErrMessageTooLarge, either way; at
// cluster.MaxMessage it is not.
func TestMessageTooLarge(t *testing.T) {
	big := make([]byte, cluster.MaxMessage+1)
	if err := cluster.Send(big); !errors.Is(err, cluster.ErrMessageTooLarge) {
		t.Errorf("Send of %d bytes: %v, want cluster.ErrMessageTooLarge", len(big), err)
	}
	if err := (&Worker{}).Send(big); !errors.Is(err, cluster.ErrMessageTooLarge) {
		t.Errorf("Worker.Send of %d bytes: %v, want cluster.ErrMessageTooLarge", len(big), err)
	}
	if err := cluster.Send(big[:cluster.MaxMessage]); !errors.Is(err, cluster.ErrStandalone) {
		t.Errorf("Send of cluster.MaxMessage bytes, standalone: %v, want cluster.ErrStandalone", err)
	}
}

// The error that stops Start is returned, not also logged.
func TestStartPrimaryErrorNotLogged(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w // the primary's logger writes to os.Stderr as it is made
	st := nodeSettings(t, "counter", 1)
	st.Listen = cluster.Listeners{busy.Addr().String()}
	_, err = Start(st)
	os.Stderr = stderr
	w.Close()
	logged, _ := io.ReadAll(r)
	r.Close()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a port in use: %v", err)
	}
	if strings.Contains(string(logged), "address already in use") {
		t.Fatalf("the error was logged as well as returned:\n%s", logged)
	}
}

// A program that stops reading Events and stops its primary does not
// hold up the workers' drains with the messages they wait to send: the
// stop takes what a drain takes, not Settings.Grace, and what was not
// read is counted in Dropped.
func TestStopWhileMessagesWait(t *testing.T) {
	st := nodeSettings(t, "counter", 1)
	st.Grace = time.Minute
	p := startReady(t, st)
	var wg sync.WaitGroup
	var served atomic.Int64
	for range 8 { // far more messages than the window and the buffer hold
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			for range 1000 {
				resp, err := c.Get("http://" + p.Addr() + "/")
				if err != nil {
					return // refused once the primary stops
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				served.Add(1)
			}
		}()
	}
	// Poll, with a deadline, until the buffer is full and no request has
	// been answered for 300ms: the handlers wait in Send.
	deadline := time.Now().Add(20 * time.Second)
	for last := int64(-1); len(p.Events()) < EventBuffer || served.Load() != last; {
		if time.Now().After(deadline) {
			t.Fatalf("%d events buffered, %d requests served after 20s: not stalled", len(p.Events()), served.Load())
		}
		last = served.Load()
		time.Sleep(300 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop with messages waiting: %v (grace %s)", err, st.Grace)
	}
	wg.Wait()
	if p.Dropped() == 0 {
		t.Error("messages waiting at the stop: none counted in Dropped")
	}
}

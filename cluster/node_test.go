package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
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
}

// helperFlood sends as many messages as each message from the primary
// says, as fast as Send lets it.
func helperFlood() {
	go func() {
		for msg := range Messages() {
			n, _ := strconv.Atoi(string(msg))
			for range n {
				if err := Send([]byte("x")); err != nil {
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
		if err := Send([]byte("1")); err != nil {
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
func nodeSettings(t *testing.T, helper string, workers int) Settings {
	t.Setenv(helperEnv, helper) // the workers inherit the environment
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	st := DefaultSettings()
	st.Listen, st.Workers, st.Control, st.Sched = "127.0.0.1:0", workers, "none", "normal"
	st.Grace, st.LogFormat = 5*time.Second, "json"
	st.Command = []string{os.Args[0]}
	return st
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
	p, err := StartPrimary(nodeSettings(t, "counter", 2))
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
	st := DefaultSettings()
	st.Listen, st.Workers, st.Control, st.Sched, st.LogFormat = "127.0.0.1:0", 1, "none", "normal", "json"
	st.Command = []string{os.Args[0]}
	p, err := StartPrimary(st)
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

package dashboard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Requests to the demo worker show up as latency end to end: in the
// status, in the per-slot Prometheus histogram on the admin listener, and
// in the dashboard's table.
func TestLatencyShown(t *testing.T) {
	const workers, requests = 2, 200
	s := startSupervisor(t, workers)
	// New connections, so that rr spreads them over the workers, and a
	// steady trickle to the end of the test, since the figures are over
	// the last few heartbeats.
	load := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var sent atomic.Int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond): // pacing the load, not synchronising
			}
			if resp, err := load.Get("http://" + s.listen + "/pid"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-stopped })
	// Heartbeats come once a second: wait until one carries the requests.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.status()
		if err != nil {
			t.Fatal(err)
		}
		var served uint64
		withP99 := 0
		for _, w := range st.Workers {
			served += w.Requests
			if w.P99S > 0 && w.P50S > 0 && w.P50S <= w.P99S {
				withP99++
			}
		}
		if served >= requests && sent.Load() >= requests && withP99 == workers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after %d requests: %+v; want each worker's p50 and p99", requests, st.Workers)
		}
		time.Sleep(100 * time.Millisecond) // polling a heartbeat-driven value, not synchronising
	}
	resp, err := s.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for slot := 1; slot <= workers; slot++ {
		if want := fmt.Sprintf(`prefork_request_duration_seconds_count{slot="%d"}`, slot); !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	// Columns 9 and 10 are p50 and p99.
	within(t, b, 10*time.Second, "the table to show every worker's p50 and p99",
		chromedp.Poll[bool](fmt.Sprintf(`(rows => rows.length === %d && rows.every(tr =>
			/ ms$/.test(tr.cells[8].textContent) && / ms$/.test(tr.cells[9].textContent)))([...document.querySelectorAll("#workers tbody tr")])`, workers),
			chromedp.WithPollingInterval(50*time.Millisecond)))
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
}

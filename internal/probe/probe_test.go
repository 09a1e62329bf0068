package probe

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// server is an httptest server that counts accepted connections.
type server struct {
	*httptest.Server
	accepted atomic.Int64
}

func newServer(t *testing.T, h http.Handler) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.accepted.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// alternating answers like two workers taking turns: pid 41872, 41873, 41872...
func alternating() http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pid := 41872 + (n.Add(1)-1)%2
		fmt.Fprintf(w, "%d\n", pid)
	})
}

func run(t *testing.T, o Options) *Result {
	t.Helper()
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatalf("Run(%+v): %v", o, err)
	}
	return r
}

func TestCountsByBodyNewConnectionPerRequest(t *testing.T) {
	s := newServer(t, alternating())
	const n = 200
	r := run(t, Options{URL: s.URL + "/pid", Requests: n, Concurrency: 8})
	if r.OK != n || r.Failed != 0 || r.Aborted != 0 || r.Stopped != "" {
		t.Fatalf("ok=%d failed=%d aborted=%d stopped=%q failures=%v", r.OK, r.Failed, r.Aborted, r.Stopped, r.FailureExamples)
	}
	if got := r.Counts["41872"]; got != n/2 {
		t.Errorf("Counts[41872] = %d, want %d (all: %v)", got, n/2, r.Counts)
	}
	if got := r.Counts["41873"]; got != n/2 {
		t.Errorf("Counts[41873] = %d, want %d (all: %v)", got, n/2, r.Counts)
	}
	if len(r.Counts) != 2 {
		t.Errorf("Counts = %v, want two pids", r.Counts)
	}
	if got := s.accepted.Load(); got != n {
		t.Errorf("server accepted %d connections, want %d (one per request)", got, n)
	}
	if r.Dials != n {
		t.Errorf("Dials = %d, want %d", r.Dials, n)
	}
	if got := r.MaxMinRatio(); got != 1 {
		t.Errorf("MaxMinRatio = %v, want 1", got)
	}
	if len(r.Latencies) != n {
		t.Errorf("len(Latencies) = %d, want %d", len(r.Latencies), n)
	}
	for i := 1; i < len(r.Latencies); i++ {
		if r.Latencies[i] < r.Latencies[i-1] {
			t.Fatalf("Latencies not sorted at %d", i)
		}
	}
	if r.MaxLatency != r.Latencies[len(r.Latencies)-1] || r.Percentile(50) > r.Percentile(99) {
		t.Errorf("latency stats inconsistent: p50 %v p99 %v max %v", r.Percentile(50), r.Percentile(99), r.MaxLatency)
	}
}

func TestKeepAliveReusesConnections(t *testing.T) {
	s := newServer(t, alternating())
	const n, c = 300, 4
	r := run(t, Options{URL: s.URL + "/pid", Requests: n, Concurrency: c, KeepAlive: true})
	if r.OK != n {
		t.Fatalf("ok=%d failed=%d %v", r.OK, r.Failed, r.FailureExamples)
	}
	if got := s.accepted.Load(); got < 1 || got > c {
		t.Errorf("server accepted %d connections, want 1..%d", got, c)
	}
	if r.Dials < 1 || r.Dials > c {
		t.Errorf("Dials = %d, want 1..%d", r.Dials, c)
	}
}

func TestConcurrencyAboveRequests(t *testing.T) {
	s := newServer(t, alternating())
	r := run(t, Options{URL: s.URL, Requests: 3, Concurrency: 100})
	if r.OK != 3 || s.accepted.Load() != 3 {
		t.Fatalf("ok=%d accepted=%d, want 3 and 3", r.OK, s.accepted.Load())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRefused(t *testing.T) {
	u := "http://" + freePort(t) + "/pid"
	r := run(t, Options{URL: u, Requests: 5, Concurrency: 2})
	if r.Failures[KindRefused] != 5 || r.Failed != 5 || r.OK != 0 {
		t.Fatalf("failures = %v (examples %v), want refused 5", r.Failures, r.FailureExamples)
	}
	if !r.Unreachable() {
		t.Error("Unreachable() = false for a refused port")
	}
	if r.MaxMinRatio() != 0 {
		t.Errorf("MaxMinRatio = %v with no successes, want 0", r.MaxMinRatio())
	}

	var out, errb bytes.Buffer
	if code := Main([]string{"-n", "3", u}, &out, &errb); code != 1 {
		t.Fatalf("Main exit = %d, want 1; stdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "refused 3") || !strings.Contains(errb.String(), "could not reach") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
}

func TestHTTPStatusFailures(t *testing.T) {
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "12345", http.StatusInternalServerError) // body must not be used as a pid
	}))
	r := run(t, Options{URL: s.URL + "/pid", Requests: 10, Concurrency: 3})
	if r.Failures["http-status 500"] != 10 || r.OK != 0 || len(r.Counts) != 0 {
		t.Fatalf("failures=%v counts=%v", r.Failures, r.Counts)
	}
	if r.Unreachable() {
		t.Error("Unreachable() = true although the server answered")
	}

	var out, errb bytes.Buffer
	if code := Main([]string{"-n", "4", s.URL + "/pid"}, &out, &errb); code != 0 {
		t.Fatalf("Main exit = %d, want 0 (failures are reported, not fatal); stderr: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "failures: 4 (http-status 500 4)") {
		t.Errorf("stdout lacks the failure line:\n%s", out.String())
	}
}

func TestDistinctKeysBounded(t *testing.T) {
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "body-%d", n.Add(1)) // every answer different
	}))
	const reqs = maxKeys + 500
	r := run(t, Options{URL: s.URL, Requests: reqs, Concurrency: 16, KeepAlive: true})
	if r.OK != reqs {
		t.Fatalf("ok=%d failures=%v", r.OK, r.Failures)
	}
	if len(r.Counts) > maxKeys+1 || r.Counts[OverflowKey] < 500 {
		t.Errorf("%d distinct keys, overflow %d; want <= %d keys and >= 500 overflow", len(r.Counts), r.Counts[OverflowKey], maxKeys+1)
	}
}

func TestMixedSuccessAndFailure(t *testing.T) {
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "7")
	}))
	r := run(t, Options{URL: s.URL, Requests: 40, Concurrency: 4})
	if r.OK != 30 || r.Counts["7"] != 30 || r.Failures["http-status 503"] != 10 {
		t.Fatalf("ok=%d counts=%v failures=%v", r.OK, r.Counts, r.Failures)
	}
}

// hijackClose answers nothing: it takes over the connection and closes it,
// with an RST instead of a FIN when reset is true.
func hijackClose(reset bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok && reset {
			tc.SetLinger(0)
		}
		conn.Close()
	})
}

func TestServerClosesWithoutAnswer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset bool
		want  string
	}{
		{"fin", false, KindEOF},
		{"rst", true, KindReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, hijackClose(tc.reset))
			r := run(t, Options{URL: s.URL + "/pid", Requests: 6, Concurrency: 2})
			if r.Failures[tc.want] != 6 || r.OK != 0 {
				t.Fatalf("failures = %v (examples %v), want %s 6", r.Failures, r.FailureExamples, tc.want)
			}
			if r.Unreachable() {
				t.Error("Unreachable() = true although connections were accepted")
			}
		})
	}
}

func TestPerRequestTimeout(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before s.Close
	r := run(t, Options{URL: s.URL, Requests: 3, Concurrency: 3, Timeout: 50 * time.Millisecond})
	if r.Failures[KindTimeout] != 3 {
		t.Fatalf("failures = %v (examples %v), want timeout 3", r.Failures, r.FailureExamples)
	}
}

// The first `fast` requests are answered at once, every later one hangs
// until the client gives up.
func hangAfter(fast int64) (http.Handler, chan struct{}) {
	release := make(chan struct{})
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= fast {
			fmt.Fprint(w, "100")
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), release
}

func TestDurationBound(t *testing.T) {
	h, release := hangAfter(3)
	s := newServer(t, h)
	t.Cleanup(func() { close(release) })

	start := time.Now()
	r := run(t, Options{URL: s.URL, Requests: 1000, Concurrency: 2, Timeout: time.Minute, Duration: 200 * time.Millisecond})
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Run took %v with a 200ms duration bound", el)
	}
	if r.OK != 3 || r.Failed != 0 || r.Aborted != 2 || r.Stopped != "duration" {
		t.Fatalf("ok=%d failed=%d aborted=%d stopped=%q failures=%v", r.OK, r.Failed, r.Aborted, r.Stopped, r.Failures)
	}

	var out, errb bytes.Buffer
	start = time.Now()
	code := Main([]string{"-n", "1000000", "-c", "4", "-timeout", "1m", "-duration", "200ms", s.URL}, &out, &errb)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Main took %v with -duration 200ms", el)
	}
	if code != 0 {
		t.Fatalf("Main exit = %d, stderr: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "stopped early (duration 200ms reached)") {
		t.Errorf("report does not say it stopped:\n%s", out.String())
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel() // the caller gives up while this request is in flight
		<-r.Context().Done()
	}))
	r, err := Run(ctx, Options{URL: s.URL, Requests: 10, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r.Stopped != "canceled" || r.Aborted != 1 || r.OK+r.Failed != 0 {
		t.Fatalf("stopped=%q aborted=%d ok=%d failed=%d", r.Stopped, r.Aborted, r.OK, r.Failed)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // must appear on stderr
	}{
		{[]string{"-n", "0"}, "-n"},
		{[]string{"-n", "10000001"}, "-n"},
		{[]string{"-n", "abc"}, "-n"},
		{[]string{"-c", "0"}, "-c"},
		{[]string{"-c", "10001"}, "-c"},
		{[]string{"-timeout", "0s"}, "-timeout"},
		{[]string{"-duration", "-1s"}, "-duration"},
		{[]string{"-bogus"}, "bogus"},
		{[]string{"ftp://127.0.0.1/pid"}, "ftp://127.0.0.1/pid"},
		{[]string{"127.0.0.1:3000/pid"}, "127.0.0.1:3000/pid"},
		{[]string{"http:///pid"}, "http:///pid"},
		{[]string{"http://127.0.0.1:99999/pid"}, "99999"},
		{[]string{"http://a/pid", "http://b/pid"}, "too many arguments"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, &out, &errb)
		if code != 2 {
			t.Errorf("Main(%q) = %d, want 2; stderr: %s", tc.args, code, errb.String())
			continue
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("Main(%q) stderr does not name %q:\n%s", tc.args, tc.want, errb.String())
		}
		if out.Len() != 0 {
			t.Errorf("Main(%q) wrote to stdout on a usage error: %s", tc.args, out.String())
		}
	}
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"-h"}, &out, &errb); code != 0 {
		t.Fatalf("Main(-h) = %d, want 0", code)
	}
	if !strings.Contains(errb.String(), "usage: supervisor probe") || !strings.Contains(errb.String(), "-keepalive") {
		t.Errorf("usage text:\n%s", errb.String())
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{URL: "https://127.0.0.1/pid"},
		{URL: "http://127.0.0.1/", Requests: -1},
		{URL: "http://127.0.0.1/", Requests: MaxRequests + 1},
		{URL: "http://127.0.0.1/", Concurrency: MaxConcurrency + 1},
		{URL: "http://127.0.0.1/", Timeout: -time.Second},
		{URL: "http://127.0.0.1/", Duration: -time.Second},
	} {
		if _, err := Run(t.Context(), o); err == nil {
			t.Errorf("Run(%+v) accepted bad options", o)
		}
	}
}

func TestMainSuccessFlagsAfterURL(t *testing.T) {
	s := newServer(t, alternating())
	var out, errb bytes.Buffer
	code := Main([]string{s.URL + "/pid", "-n", "20", "-c", "2", "-keepalive"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{
		"probe " + s.URL + "/pid: 20 requests, concurrency 2, keep-alive connections\n",
		"pid      count   share\n",
		"41872       10   50.0%  ##############################\n",
		"41873       10   50.0%  ##############################\n",
		"max/min 1.00   req/s ",
		"failures: none\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if s.accepted.Load() > 2 {
		t.Errorf("-keepalive -c 2 opened %d connections", s.accepted.Load())
	}
}

func TestMaxMinRatio(t *testing.T) {
	for _, tc := range []struct {
		counts map[string]int
		want   float64
	}{
		{nil, 0},
		{map[string]int{}, 0},
		{map[string]int{"1": 7}, 1},
		{map[string]int{"1": 10, "2": 5}, 2},
		{map[string]int{"1": 3, "2": 4, "3": 6}, 2},
		{map[string]int{"1": 501, "2": 499}, 501.0 / 499.0},
	} {
		r := &Result{Counts: tc.counts}
		if got := r.MaxMinRatio(); got != tc.want {
			t.Errorf("MaxMinRatio(%v) = %v, want %v", tc.counts, got, tc.want)
		}
	}
}

func TestPrint(t *testing.T) {
	r := &Result{
		URL: "http://127.0.0.1:3000/pid", Requests: 1000, Concurrency: 16,
		Counts:   map[string]int{"41873": 499, "41872": 501},
		Failures: map[string]int{}, OK: 1000,
		Latencies:  []time.Duration{time.Millisecond, 1200 * time.Microsecond, 3400 * time.Microsecond},
		MaxLatency: 7800 * time.Microsecond,
		Elapsed:    123 * time.Millisecond,
		Dials:      1000,
	}
	var b bytes.Buffer
	r.Print(&b)
	want := "" +
		"probe http://127.0.0.1:3000/pid: 1000 requests, concurrency 16, new connection per request\n" +
		"pid      count   share\n" +
		"41872      501   50.1%  ##############################\n" +
		"41873      499   49.9%  #############################\n" +
		"max/min 1.00   req/s 8130   latency p50 1.2ms p99 3.4ms max 7.8ms\n" +
		"failures: none\n" +
		"connections opened 1000   elapsed 123.0ms\n"
	if b.String() != want {
		t.Errorf("Print:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestPrintFailuresAndOrdering(t *testing.T) {
	r := &Result{
		URL: "http://h/pid", Requests: 20, Concurrency: 1, KeepAlive: true, Duration: time.Second,
		Counts:          map[string]int{"100": 6, "9": 2, "hello": 1},
		Failures:        map[string]int{"refused": 3, "http-status 500": 3, "other": 1},
		FailureExamples: map[string]string{"other": "boom"},
		OK:              9, Failed: 7, Aborted: 1, Stopped: "duration",
		Latencies: []time.Duration{500 * time.Microsecond}, MaxLatency: 2 * time.Second,
		Elapsed: time.Second,
	}
	var b bytes.Buffer
	r.Print(&b)
	got := b.String()
	i9, i100, ih := strings.Index(got, "\n9 "), strings.Index(got, "\n100 "), strings.Index(got, "\nhello ")
	if !(i9 >= 0 && i9 < i100 && i100 < ih) {
		t.Errorf("rows not in numeric-then-lexical order:\n%s", got)
	}
	for _, want := range []string{
		"keep-alive connections",
		"pid      count   share\n",
		"100          6   66.7%  ##############################\n",
		"9            2   22.2%  ##########\n",
		"hello        1   11.1%  #####\n",
		"note: some 2xx bodies are not pids",
		"max/min 6.00   req/s 9   latency p50 500µs p99 500µs max 2.00s\n",
		"failures: 7 (http-status 500 3, refused 3, other 1)\n",
		"  other, e.g.: boom\n",
		"stopped early (duration 1s reached): 16 of 20 requests completed, 1 in flight abandoned\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestPrintNothingSucceeded(t *testing.T) {
	r := &Result{URL: "http://h/pid", Requests: 2, Concurrency: 1,
		Failures: map[string]int{"refused": 2}, Failed: 2}
	var b bytes.Buffer
	r.Print(&b)
	for _, want := range []string{"no successful responses\n", "max/min -", "failures: 2 (refused 2)\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestPercentile(t *testing.T) {
	r := &Result{}
	if r.Percentile(50) != 0 {
		t.Error("Percentile of nothing should be 0")
	}
	for i := 1; i <= 100; i++ {
		r.Latencies = append(r.Latencies, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 99: 99, 100: 100, 1: 1, 0.5: 1} {
		if got := r.Percentile(p); got != want {
			t.Errorf("Percentile(%v) = %v, want %v", p, got, want)
		}
	}
}

func TestSortKeys(t *testing.T) {
	keys := []string{"b", "100", "9", "a", "", "10", "009"}
	sortKeys(keys)
	want := []string{"009", "9", "10", "100", "", "a", "b"}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("sortKeys = %q, want %q", keys, want)
	}
}

func TestLatencySamplingIsBounded(t *testing.T) {
	tl := &tally{capLat: 4}
	for i := 1; i <= 1000; i++ {
		tl.addLatency(time.Duration(i))
	}
	if len(tl.lat) != 4 || tl.seen != 1000 || tl.maxLat != 1000 {
		t.Fatalf("len=%d seen=%d max=%v, want 4, 1000, 1000ns", len(tl.lat), tl.seen, tl.maxLat)
	}
	for _, d := range tl.lat {
		if d < 1 || d > 1000 {
			t.Errorf("sample %v out of range", d)
		}
	}
	// Below the cap everything is kept, in order.
	tl = &tally{capLat: 10}
	for i := 1; i <= 3; i++ {
		tl.addLatency(time.Duration(i))
	}
	if fmt.Sprint(tl.lat) != "[1ns 2ns 3ns]" {
		t.Errorf("lat = %v", tl.lat)
	}
}

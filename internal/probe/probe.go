// Package probe measures how evenly a prefork supervisor spreads
// connections over its workers.
//
// Every worker answers GET /pid with its decimal pid. The probe fires a
// bounded number of requests (by default each on a NEW TCP connection, so
// every request is a fresh accept the supervisor has to balance), counts the
// responses by body, and prints a table of per-pid counts, the max/min ratio,
// latency percentiles and failures by kind.
//
// It is wired as the "probe" subcommand of the supervisor binary through Main.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults and limits shared by Main and Run.
const (
	DefaultURL         = "http://127.0.0.1:3000/pid"
	DefaultRequests    = 1000
	DefaultConcurrency = 1
	DefaultTimeout     = 5 * time.Second
	DefaultDuration    = 60 * time.Second

	MaxRequests    = 10_000_000
	MaxConcurrency = 10_000

	// MaxLatencySamples bounds the memory spent on latencies (8 MiB). Up to
	// this many successful requests every latency is kept and percentiles are
	// exact; beyond it each worker keeps a uniform reservoir sample of its own
	// requests (MaxLatencySamples/workers each).
	MaxLatencySamples = 1 << 20

	maxKeyBytes   = 128      // bytes of a 2xx body used as the pid key
	maxKeys       = 10_000   // distinct keys kept; further bodies go to OverflowKey
	maxDrainBytes = 64 << 10 // rest of a body read so a keep-alive conn can be reused
	barWidth      = 30
	userAgent     = "prefork-probe"
)

// OverflowKey collects 2xx responses whose body would have been a new key
// after 10,000 distinct ones (a target answering something other than pids),
// keeping memory bounded.
const OverflowKey = "(other bodies)"

// Failure kinds. Non-2xx responses are reported as "http-status NNN".
const (
	KindRefused     = "refused"     // ECONNREFUSED: nothing listening
	KindReset       = "reset"       // ECONNRESET / EPIPE / ECONNABORTED
	KindTimeout     = "timeout"     // the per-request timeout expired
	KindEOF         = "eof"         // the server closed the connection without an answer
	KindDNS         = "dns"         // the URL's host did not resolve
	KindUnreachable = "unreachable" // EHOSTUNREACH / ENETUNREACH
	KindOther       = "other"
)

// Options configures Run. Zero fields take the defaults above; negative or
// out-of-range values are an error.
type Options struct {
	URL         string        // http URL of a worker's /pid endpoint
	Requests    int           // total requests to issue, 1..MaxRequests
	Concurrency int           // requests in flight at once, 1..MaxConcurrency
	KeepAlive   bool          // false: a new TCP connection for every request
	Timeout     time.Duration // per request (dial, headers and body)
	Duration    time.Duration // overall bound: stop issuing after it, abandon requests in flight
}

// Result is what Run observed.
type Result struct {
	// The options the run used (after defaults).
	URL         string
	Requests    int
	Concurrency int
	KeepAlive   bool
	Timeout     time.Duration
	Duration    time.Duration

	// Counts holds successful (2xx) responses keyed by body, whitespace
	// trimmed (only the first 128 bytes of a body are used): normally a pid.
	// At most 10,000 distinct keys are kept, the rest count under OverflowKey.
	Counts map[string]int
	// Failures counts failed requests by kind: one of the Kind* constants or
	// "http-status NNN" for a non-2xx response.
	Failures map[string]int
	// FailureExamples holds the first error message seen for each kind.
	FailureExamples map[string]string

	OK      int // successful requests (sum of Counts)
	Failed  int // failed requests (sum of Failures)
	Aborted int // in flight when the run was stopped; neither OK nor Failed

	// Stopped says why fewer than Requests requests completed: "" (all
	// completed), "duration" (the Duration bound expired) or "canceled"
	// (the caller's context was canceled).
	Stopped string

	// Dials is the number of TCP connections the probe opened successfully.
	Dials int64

	// Latencies of successful requests (request start to end of body),
	// sorted ascending: all of them, or a sample once OK > MaxLatencySamples.
	Latencies  []time.Duration
	MaxLatency time.Duration // exact, over all successful requests

	Elapsed time.Duration // wall time of the whole run
}

// Run issues o.Requests GET requests to o.URL, o.Concurrency at a time, and
// tallies the answers. It stops early, returning what was done, when
// o.Duration has passed or ctx is canceled; requests in flight at that moment
// are abandoned and counted in Result.Aborted. The only error is an invalid
// Options value.
func Run(ctx context.Context, o Options) (*Result, error) {
	o, err := o.normalize()
	if err != nil {
		return nil, err
	}
	workers := min(o.Concurrency, o.Requests)

	var dials atomic.Int64
	dialer := &net.Dialer{}
	tr := &http.Transport{
		Proxy: nil, // measure the supervisor itself, never a proxy in between
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				dials.Add(1)
			}
			return c, err
		},
		DisableKeepAlives:   !o.KeepAlive,
		DisableCompression:  true,
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
	}
	if o.KeepAlive {
		// Hard cap: never more connections than workers, even when a dial
		// races with a connection being returned to the idle pool.
		tr.MaxConnsPerHost = workers
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect is reported as its status: following it would open
		// other connections and muddle the balance being measured.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	perWorker := max(1, MaxLatencySamples/workers)
	expect := (o.Requests + workers - 1) / workers
	tallies := make([]*tally, workers)
	var issued, keys atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tallies {
		t := &tally{
			client:   client,
			o:        &o,
			keys:     &keys,
			counts:   make(map[string]int),
			failures: make(map[string]int),
			examples: make(map[string]string),
			capLat:   perWorker,
			lat:      make([]time.Duration, 0, min(perWorker, expect)),
		}
		tallies[i] = t
		wg.Go(func() {
			for runCtx.Err() == nil && issued.Add(1) <= int64(o.Requests) {
				t.one(runCtx)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	r := &Result{
		URL:             o.URL,
		Requests:        o.Requests,
		Concurrency:     o.Concurrency,
		KeepAlive:       o.KeepAlive,
		Timeout:         o.Timeout,
		Duration:        o.Duration,
		Counts:          make(map[string]int),
		Failures:        make(map[string]int),
		FailureExamples: make(map[string]string),
		Dials:           dials.Load(),
		Elapsed:         elapsed,
	}
	n := 0
	for _, t := range tallies {
		n += len(t.lat)
	}
	r.Latencies = make([]time.Duration, 0, n)
	for _, t := range tallies {
		for k, c := range t.counts {
			r.Counts[k] += c
		}
		for k, c := range t.failures {
			r.Failures[k] += c
		}
		for k, e := range t.examples {
			if _, ok := r.FailureExamples[k]; !ok {
				r.FailureExamples[k] = e
			}
		}
		r.OK += t.ok
		r.Failed += t.failed
		r.Aborted += t.aborted
		r.MaxLatency = max(r.MaxLatency, t.maxLat)
		r.Latencies = append(r.Latencies, t.lat...)
	}
	slices.Sort(r.Latencies)
	if r.OK+r.Failed < r.Requests {
		if ctx.Err() != nil {
			r.Stopped = "canceled"
		} else {
			r.Stopped = "duration"
		}
	}
	return r, nil
}

func (o Options) normalize() (Options, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if err := checkURL(o.URL); err != nil {
		return o, err
	}
	if o.Requests == 0 {
		o.Requests = DefaultRequests
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	switch {
	case o.Requests < 1 || o.Requests > MaxRequests:
		return o, fmt.Errorf("probe: Requests must be between 1 and %d (got %d)", MaxRequests, o.Requests)
	case o.Concurrency < 1 || o.Concurrency > MaxConcurrency:
		return o, fmt.Errorf("probe: Concurrency must be between 1 and %d (got %d)", MaxConcurrency, o.Concurrency)
	case o.Timeout < 0:
		return o, fmt.Errorf("probe: Timeout must be positive (got %v)", o.Timeout)
	case o.Duration < 0:
		return o, fmt.Errorf("probe: Duration must be positive (got %v)", o.Duration)
	}
	return o, nil
}

// checkURL accepts only http URLs with a host (and a valid port, if any).
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("invalid URL %q: %v", s, err)
	}
	if u.Scheme != "http" {
		if u.Scheme == "" {
			return fmt.Errorf("invalid URL %q: scheme must be http (e.g. %s)", s, DefaultURL)
		}
		hint := ""
		if !strings.Contains(s, "://") {
			hint = " (missing http://?)"
		}
		return fmt.Errorf("invalid URL %q: scheme must be http, not %q%s", s, u.Scheme, hint)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("invalid URL %q: missing host", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("invalid URL %q: bad port %q", s, p)
		}
	}
	return nil
}

// tally is one worker's private counters, merged after the run.
type tally struct {
	client *http.Client
	o      *Options
	keys   *atomic.Int64 // distinct keys created, over all workers

	counts   map[string]int
	failures map[string]int
	examples map[string]string
	ok       int
	failed   int
	aborted  int

	lat    []time.Duration // reservoir of at most capLat latencies
	capLat int
	seen   int // successes offered to the reservoir
	maxLat time.Duration
}

func (t *tally) one(runCtx context.Context) {
	ctx, cancel := context.WithTimeout(runCtx, t.o.Timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.o.URL, nil)
	if err != nil {
		t.fail(KindOther, err)
		return
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := t.client.Do(req)
	if err != nil {
		t.failErr(runCtx, err)
		return
	}
	key, err := readKey(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.failErr(runCtx, err)
		return
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		t.fail("http-status "+strconv.Itoa(resp.StatusCode), nil)
		return
	}
	d := time.Since(start)
	t.ok++
	if _, ok := t.counts[key]; !ok && t.keys.Add(1) > maxKeys {
		key = OverflowKey
	}
	t.counts[key]++
	t.addLatency(d)
}

// addLatency keeps every latency up to capLat, then a uniform reservoir
// sample (algorithm R) of all latencies offered.
func (t *tally) addLatency(d time.Duration) {
	t.maxLat = max(t.maxLat, d)
	t.seen++
	if len(t.lat) < t.capLat {
		t.lat = append(t.lat, d)
	} else if j := rand.IntN(t.seen); j < t.capLat {
		t.lat[j] = d
	}
}

// failErr records err, unless the run itself was stopped (duration or
// cancellation): then the request was abandoned, not failed.
func (t *tally) failErr(runCtx context.Context, err error) {
	if runCtx.Err() != nil {
		t.aborted++
		return
	}
	t.fail(classify(err), err)
}

func (t *tally) fail(kind string, err error) {
	t.failed++
	t.failures[kind]++
	if _, ok := t.examples[kind]; !ok && err != nil {
		t.examples[kind] = err.Error()
	}
}

// readKey returns the trimmed start of body and drains a bounded remainder
// so that a keep-alive connection can go back to the pool.
func readKey(body io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxKeyBytes))
	if err != nil {
		return "", err
	}
	if len(b) == maxKeyBytes {
		if _, err := io.Copy(io.Discard, io.LimitReader(body, maxDrainBytes)); err != nil {
			return "", err
		}
	}
	return strings.TrimSpace(string(b)), nil
}

// classify maps a transport error to a failure kind.
func classify(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return KindReset
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		strings.Contains(err.Error(), "server closed idle connection"):
		return KindEOF
	case errors.As(err, &dnsErr):
		return KindDNS
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return KindUnreachable
	}
	return KindOther
}

// Unreachable reports whether the target could not be reached at all: no
// request succeeded, no TCP connection was ever opened, and at least one
// request failed (refused, unresolvable host, unreachable, dial timeout...).
func (r *Result) Unreachable() bool {
	return r.OK == 0 && r.Dials == 0 && r.Failed > 0
}

// MaxMinRatio is the largest per-pid count divided by the smallest, over the
// pids that answered at all (1 with a single pid, 0 when nothing succeeded).
// Workers that got no request are invisible to the probe and do not count.
func (r *Result) MaxMinRatio() float64 {
	lo, hi := 0, 0
	for _, c := range r.Counts {
		if c <= 0 {
			continue
		}
		if lo == 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
	}
	if lo == 0 {
		return 0
	}
	return float64(hi) / float64(lo)
}

// Percentile returns the p-th percentile (0 < p <= 100, nearest rank) of the
// successful latencies, or 0 when there are none.
func (r *Result) Percentile(p float64) time.Duration {
	n := len(r.Latencies)
	if n == 0 {
		return 0
	}
	i := int(float64(n)*p/100+0.9999999) - 1
	return r.Latencies[min(max(i, 0), n-1)]
}

// RequestsPerSecond is successful requests per second of wall time.
func (r *Result) RequestsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Pids returns the keys of Counts: numeric ones in numeric order, then any
// others in lexical order.
func (r *Result) Pids() []string {
	keys := make([]string, 0, len(r.Counts))
	for k := range r.Counts {
		keys = append(keys, k)
	}
	sortKeys(keys)
	return keys
}

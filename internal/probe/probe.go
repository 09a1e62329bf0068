package probe

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

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

package probe

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
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

// normalize fills in the defaults and checks the ranges.
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

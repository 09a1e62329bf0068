package chaos

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// reqDeadline bounds every request of a load: one that takes longer is hung.
const reqDeadline = 5 * time.Second

// result is one request of a load.
type result struct {
	start time.Time
	took  time.Duration
	err   error
}

func (r result) end() time.Time { return r.start.Add(r.took) }

// load sends GET /pid at a bounded rate from two kinds of clients: ones
// that open a new connection per request and ones that keep theirs alive.
// Every loop is bounded by stop, a count and a duration.
type load struct {
	addr string
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu      sync.Mutex
	results []result
}

// loadSpec: clients of each kind, each sending every interval, for at most d;
// each request given up after deadline (0: reqDeadline).
type loadSpec struct {
	fresh, keepAlive int
	every            time.Duration
	d                time.Duration
	deadline         time.Duration
}

// mixed is the load of the kill and storm scenarios: 4+4 clients at 20ms,
// 400 requests a second.
func mixed(d time.Duration) loadSpec {
	return loadSpec{fresh: 4, keepAlive: 4, every: 20 * time.Millisecond, d: d}
}

func startLoad(addr string, spec loadSpec) *load {
	l := &load{addr: addr, stop: make(chan struct{})}
	max := int(spec.d/spec.every) + 1
	deadline := reqDeadline
	if spec.deadline > 0 {
		deadline = spec.deadline
	}
	for i := 0; i < spec.fresh+spec.keepAlive; i++ {
		tr := &http.Transport{DisableKeepAlives: i < spec.fresh, MaxIdleConnsPerHost: 1}
		c := &http.Client{Timeout: deadline, Transport: tr}
		l.wg.Add(1)
		go l.loop(c, max, spec)
	}
	return l
}

func (l *load) loop(c *http.Client, max int, spec loadSpec) {
	defer l.wg.Done()
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(spec.d)
	tick := time.NewTicker(spec.every) // pacing: the rate bound, not synchronisation
	defer tick.Stop()
	for i := 0; i < max && time.Now().Before(deadline); i++ {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		l.add(l.one(c))
	}
}

func (l *load) one(c *http.Client) result {
	r := result{start: time.Now()}
	resp, err := c.Get("http://" + l.addr + "/pid")
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	r.took, r.err = time.Since(r.start), err
	return r
}

func (l *load) add(r result) {
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// finish stops the clients, waits for them and returns every result.
func (l *load) finish() []result {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.results
}

// okCount returns the requests that succeeded so far.
func (l *load) okCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if r.err == nil {
			n++
		}
	}
	return n
}

// summary is what a load's results add up to.
type summary struct {
	total, failed, hung int
	max, p99            time.Duration
	errs                []string  // a few distinct errors, for the diagnosis
	firstFail, lastFail time.Time // when the first and the last failed request began
}

// failWindow says when the failed requests began, for the diagnosis.
func (s summary) failWindow() string {
	if s.failed == 0 {
		return "none failed"
	}
	return fmt.Sprintf("failed requests began from %s to %s", s.firstFail.Format("15:04:05.000"), s.lastFail.Format("15:04:05.000"))
}

func summarize(rs []result) summary {
	s := summary{total: len(rs)}
	seen := map[string]bool{}
	lat := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		lat = append(lat, r.took)
		if r.took >= reqDeadline {
			s.hung++
		}
		if r.err != nil {
			if s.failed == 0 || r.start.Before(s.firstFail) {
				s.firstFail = r.start
			}
			if r.start.After(s.lastFail) {
				s.lastFail = r.start
			}
			s.failed++
			if msg := shortErr(r.err); !seen[msg] && len(s.errs) < 5 {
				seen[msg] = true
				s.errs = append(s.errs, msg)
			}
		}
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		s.max, s.p99 = lat[len(lat)-1], lat[len(lat)*99/100]
	}
	return s
}

// shortErr drops the URL from a client error, so equal causes compare equal.
func shortErr(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "Get ") {
		return msg[i+2:]
	}
	return msg
}

package admin

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Failed logins are limited per client address with a token bucket: a
// client may fail failBurst times in a row, then once every failEvery.
// While it is over, every request it makes is refused with 429, before
// its credential is looked at, so a guess costs no bcrypt and reveals
// nothing.
const (
	failBurst = 5
	failEvery = 2 * time.Second
	// maxTracked bounds the addresses remembered. Once that many are
	// failing at once, new ones share one bucket, so a flood from many
	// addresses is limited as one client.
	maxTracked = 4096
)

// limiter counts failures per client address. The zero value is not
// usable; see newLimiter.
type limiter struct {
	now func() time.Time

	mu       sync.Mutex
	buckets  map[netip.Prefix]*bucket
	overflow bucket
	swept    time.Time // the last sweep: at most one a failEvery, so a flood costs O(1) a failure
}

// bucket is a token bucket of failures allowed: full at failBurst.
type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, buckets: make(map[netip.Prefix]*bucket), overflow: bucket{tokens: failBurst}}
}

// clientKey is who a remote address is: the address, or its /64 for IPv6,
// which one host usually has whole.
func clientKey(remote string) netip.Prefix {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // bits fit the address: cannot fail
	return p
}

// refill brings b up to date at now.
func (b *bucket) refill(now time.Time) {
	b.tokens += now.Sub(b.at).Seconds() / failEvery.Seconds()
	if b.tokens > failBurst {
		b.tokens = failBurst
	}
	b.at = now
}

// allowed reports whether the client may try (again), and if not, how long
// until it may.
func (l *limiter) allowed(key netip.Prefix) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) < maxTracked {
			return true, 0 // never failed, or forgiven
		}
		b = &l.overflow
	}
	b.refill(l.now())
	if b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(failEvery))
}

// fail records a failed attempt by the client.
func (l *limiter) fail(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxTracked && now.Sub(l.swept) >= failEvery {
			l.sweep(now)
		}
		if len(l.buckets) >= maxTracked {
			b = &l.overflow
		} else {
			b = &bucket{tokens: failBurst, at: now}
			l.buckets[key] = b
		}
	}
	b.refill(now)
	b.tokens = max(b.tokens-1, 0)
}

// sweep forgets the clients whose buckets have filled up again: they are
// where a client that never failed is.
func (l *limiter) sweep(now time.Time) {
	l.swept = now
	for k, b := range l.buckets {
		if b.refill(now); b.tokens >= failBurst {
			delete(l.buckets, k)
		}
	}
}

// tracked is how many addresses the limiter remembers.
func (l *limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

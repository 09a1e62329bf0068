package latency

import (
	"sync/atomic"
	"time"
)

// NumBounds is the number of finite bucket bounds; [Buckets] adds one
// bucket for what exceeds the last.
const NumBounds = 26

// Buckets is the number of buckets in a histogram.
const Buckets = NumBounds + 1

// Bounds are the buckets' inclusive upper bounds: bucket i counts
// durations d with Bounds[i-1] < d ≤ Bounds[i] (Prometheus's "le"), and
// bucket NumBounds those above Bounds[NumBounds-1].
var Bounds = func() (b [NumBounds]time.Duration) {
	steps := [...]time.Duration{100, 150, 250, 400, 600} // µs, five a decade
	scale := time.Microsecond
	for i := range NumBounds - 1 {
		b[i] = steps[i%len(steps)] * scale
		if i%len(steps) == len(steps)-1 {
			scale *= 10
		}
	}
	b[NumBounds-1] = 10 * time.Second
	return b
}()

// Bucket returns the index of the bucket d falls in.
func Bucket(d time.Duration) int {
	lo, hi := 0, NumBounds // the answer is in [lo, hi]
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d <= Bounds[m] {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// Counts is a histogram's value: counts per bucket and the sum of what was
// observed, both cumulative since the recorder started.
type Counts struct {
	Buckets [Buckets]uint64
	Sum     time.Duration
}

// Recorder records durations. It is safe for concurrent use, does not
// allocate, and its zero value is ready.
type Recorder struct {
	buckets [Buckets]atomic.Uint64
	sum     atomic.Int64
}

// Observe records one duration; a negative one counts as 0.
func (r *Recorder) Observe(d time.Duration) {
	d = max(d, 0)
	r.buckets[Bucket(d)].Add(1)
	r.sum.Add(int64(d))
}

// Snapshot returns what r has recorded. Observations that race with it
// may be counted in some fields and not others.
func (r *Recorder) Snapshot() Counts {
	var c Counts
	for i := range r.buckets {
		c.Buckets[i] = r.buckets[i].Load()
	}
	c.Sum = time.Duration(r.sum.Load())
	return c
}

// Total is the number of observations.
func (c *Counts) Total() uint64 {
	var n uint64
	for _, v := range c.Buckets {
		n += v
	}
	return n
}

// Add adds o to c, bucket by bucket.
func (c *Counts) Add(o *Counts) {
	for i, v := range o.Buckets {
		c.Buckets[i] += v
	}
	c.Sum += o.Sum
}

// Since returns what was observed between old and c, two snapshots of one
// recorder. If any bucket went down, c is not from the same recorder as
// old (the worker restarted), and Since returns c.
func (c *Counts) Since(old *Counts) Counts {
	d := Counts{Sum: c.Sum - old.Sum}
	for i, v := range c.Buckets {
		if v < old.Buckets[i] {
			return *c
		}
		d.Buckets[i] = v - old.Buckets[i]
	}
	return d
}

// Quantile estimates the q-quantile (0 ≤ q ≤ 1) of what c counts, by
// linear interpolation within the bucket it falls in, as Prometheus's
// histogram_quantile does; the first bucket starts at 0. It returns 0 for
// an empty histogram, and the last bound for a quantile past it, since
// nothing is known of that bucket's durations but that they exceed it.
func (c *Counts) Quantile(q float64) time.Duration {
	total := c.Total()
	if total == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(total)
	var seen uint64
	for i, n := range c.Buckets {
		if n == 0 || float64(seen+n) < rank {
			seen += n
			continue
		}
		if i == NumBounds {
			return Bounds[NumBounds-1]
		}
		var lower time.Duration
		if i > 0 {
			lower = Bounds[i-1]
		}
		frac := (rank - float64(seen)) / float64(n)
		return lower + time.Duration(frac*float64(Bounds[i]-lower))
	}
	return Bounds[NumBounds-1] // unreachable: seen reaches total ≥ rank
}

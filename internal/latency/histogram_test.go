package latency

import (
	"sync"
	"testing"
	"time"
)

func TestBoundsIncrease(t *testing.T) {
	if Bounds[0] != 100*time.Microsecond || Bounds[NumBounds-1] != 10*time.Second {
		t.Fatalf("bounds run %v..%v, want 100µs..10s", Bounds[0], Bounds[NumBounds-1])
	}
	for i := 1; i < NumBounds; i++ {
		if r := float64(Bounds[i]) / float64(Bounds[i-1]); r < 1.4 || r > 1.7 {
			t.Errorf("Bounds[%d]/Bounds[%d] = %v/%v = %.2f, want roughly log-spaced", i, i-1, Bounds[i], Bounds[i-1], r)
		}
	}
}

func TestBucket(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{-time.Second, 0},
		{100 * time.Microsecond, 0},
		{100*time.Microsecond + 1, 1},
		{150 * time.Microsecond, 1},
		{time.Millisecond, 5},
		{1500 * time.Microsecond, 6},
		{10 * time.Second, NumBounds - 1},
		{10*time.Second + 1, NumBounds},
		{time.Hour, NumBounds},
	} {
		if have := Bucket(tc.d); have != tc.want {
			t.Errorf("Bucket(%v) = %d, want %d", tc.d, have, tc.want)
		}
	}
	// Every bound is in its own bucket, and just past it in the next.
	for i, b := range Bounds {
		if have := Bucket(b); have != i {
			t.Errorf("Bucket(Bounds[%d]=%v) = %d", i, b, have)
		}
		if have := Bucket(b + 1); have != i+1 {
			t.Errorf("Bucket(Bounds[%d]+1) = %d, want %d", i, have, i+1)
		}
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var r Recorder
	const goroutines, each = 4, 1000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				r.Observe(time.Duration(g+1) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	c := r.Snapshot()
	if have, want := c.Total(), uint64(goroutines*each); have != want {
		t.Fatalf("Total = %d, want %d", have, want)
	}
	if have, want := c.Sum, time.Duration(each)*(1+2+3+4)*time.Millisecond; have != want {
		t.Fatalf("Sum = %v, want %v", have, want)
	}
	for g := range goroutines {
		d := time.Duration(g+1) * time.Millisecond
		if have := c.Buckets[Bucket(d)]; have < each {
			t.Errorf("bucket of %v holds %d, want at least %d", d, have, each)
		}
	}
}

func TestQuantile(t *testing.T) {
	var empty Counts
	if have := empty.Quantile(0.99); have != 0 {
		t.Errorf("empty: Quantile(0.99) = %v, want 0", have)
	}
	// 100 observations: 90 in (1ms, 1.5ms], 9 in (4ms, 6ms], 1 above 10s.
	var c Counts
	c.Buckets[Bucket(1200*time.Microsecond)] = 90
	c.Buckets[Bucket(5*time.Millisecond)] = 9
	c.Buckets[NumBounds] = 1
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0, time.Millisecond},                                // the start of the first non-empty bucket
		{0.5, time.Millisecond + 50*500*time.Microsecond/90}, // 50 of 90 into (1ms, 1.5ms]
		{0.9, 1500 * time.Microsecond},                       // the end of that bucket
		{0.95, 4*time.Millisecond + 5*2*time.Millisecond/9},
		{0.99, 6 * time.Millisecond},
		{1, 10 * time.Second}, // the overflow bucket: only its lower bound is known
		{2, 10 * time.Second}, // clamped
	} {
		if have := c.Quantile(tc.q); absDiff(have, tc.want) > time.Microsecond {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, have, tc.want)
		}
	}
}

func TestSinceAndAdd(t *testing.T) {
	var r Recorder
	r.Observe(time.Millisecond)
	old := r.Snapshot()
	r.Observe(time.Millisecond)
	r.Observe(time.Second)
	now := r.Snapshot()
	d := now.Since(&old)
	if d.Total() != 2 || d.Sum != time.Second+time.Millisecond {
		t.Fatalf("Since: total %d sum %v, want 2 and 1.001s", d.Total(), d.Sum)
	}
	// A restarted recorder has fewer counts: Since returns the new counts.
	var fresh Recorder
	fresh.Observe(time.Second)
	restarted := fresh.Snapshot()
	if have := restarted.Since(&now); have != restarted {
		t.Fatalf("Since across a restart = %+v, want the new counts", have)
	}
	sum := old
	sum.Add(&d)
	if sum != now {
		t.Fatalf("old + (now - old) = %+v, want %+v", sum, now)
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}

func BenchmarkObserve(b *testing.B) {
	var r Recorder
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d = (d + 137*time.Microsecond) % (20 * time.Millisecond)
			r.Observe(d)
		}
	})
}

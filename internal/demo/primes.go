package demo

import (
	"context"
	"sync"
)

// segmentSize is the number of integers each worker sieves at a time. It
// keeps a worker's marks in L1/L2 cache and bounds how much work is done
// between context checks.
const segmentSize = 1 << 15

// countPrimes returns the number of primes below n, splitting [0, n) into
// workers contiguous ranges sieved concurrently. Each worker checks ctx
// between segments; if ctx is cancelled the count is abandoned and
// ctx.Err() is returned.
func countPrimes(ctx context.Context, n, workers int) (int, error) {
	if n <= 2 {
		return 0, ctx.Err()
	}
	workers = max(workers, 1)
	base := basePrimes(n)

	chunk := (n + workers - 1) / workers
	counts := make([]int, workers)
	var wg sync.WaitGroup
	for i := range workers {
		lo := min(i*chunk, n)
		hi := min(lo+chunk, n)
		wg.Go(func() {
			counts[i] = sieveRange(ctx, lo, hi, base)
		})
	}
	wg.Wait()

	if err := ctx.Err(); err != nil {
		return 0, err
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	return total, nil
}

// basePrimes returns the primes p with p*p < n, which are all a segmented
// sieve of [0, n) needs to strike out every composite.
func basePrimes(n int) []int {
	limit := 1
	for (limit+1)*(limit+1) < n {
		limit++
	}
	composite := make([]bool, limit+1)
	var primes []int
	for p := 2; p <= limit; p++ {
		if composite[p] {
			continue
		}
		primes = append(primes, p)
		for j := p * p; j <= limit; j += p {
			composite[j] = true
		}
	}
	return primes
}

// sieveRange counts the primes in [lo, hi) using base, one segment at a
// time. It returns early, with a partial count, once ctx is done.
func sieveRange(ctx context.Context, lo, hi int, base []int) int {
	if lo >= hi {
		return 0
	}
	composite := make([]bool, min(segmentSize, hi-lo))
	count := 0
	for start := lo; start < hi; start += segmentSize {
		if ctx.Err() != nil {
			return count
		}
		end := min(start+segmentSize, hi)
		seg := composite[:end-start]
		clear(seg)
		for _, p := range base {
			if p*p >= end {
				break
			}
			j := p * p
			if j < start {
				j = (start + p - 1) / p * p
			}
			for ; j < end; j += p {
				seg[j-start] = true
			}
		}
		for i, c := range seg {
			if !c && start+i >= 2 {
				count++
			}
		}
	}
	return count
}

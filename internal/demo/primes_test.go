package demo

import (
	"context"
	"errors"
	"testing"
)

// naivePrimes counts primes below n by trial division.
func naivePrimes(n int) int {
	count := 0
	for x := 2; x < n; x++ {
		prime := true
		for d := 2; d*d <= x; d++ {
			if x%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			count++
		}
	}
	return count
}

func TestCountPrimesKnown(t *testing.T) {
	tests := []struct{ n, want int }{
		{0, 0}, {1, 0}, {2, 0}, {3, 1}, {4, 2}, {10, 4}, {11, 4}, {12, 5},
		{100, 25}, {1000, 168}, {10_000, 1229}, {1_000_000, 78498},
	}
	for _, tt := range tests {
		for _, workers := range []int{0, 1, 3, 8, 64} {
			have, err := countPrimes(context.Background(), tt.n, workers)
			if err != nil {
				t.Fatalf("n=%d workers=%d: %v", tt.n, workers, err)
			}
			if tt.want != have {
				t.Errorf("n=%d workers=%d: want %d, have %d", tt.n, workers, tt.want, have)
			}
		}
	}
}

// TestCountPrimesSplits compares against trial division for every n in a
// range, so chunk and segment boundaries land on primes, squares and
// composites alike.
func TestCountPrimesSplits(t *testing.T) {
	want := 0
	for n := 0; n <= 600; n++ {
		if n > 2 && naivePrimes(n) != naivePrimes(n-1) {
			want++
		}
		for _, workers := range []int{1, 2, 5, 7, 13} {
			have, _ := countPrimes(context.Background(), n, workers)
			if want != have {
				t.Fatalf("n=%d workers=%d: want %d, have %d", n, workers, want, have)
			}
		}
	}
}

// TestCountPrimesSegments crosses several segment boundaries in one worker.
func TestCountPrimesSegments(t *testing.T) {
	n := 3*segmentSize + 17
	want := naivePrimes(n)
	for _, workers := range []int{1, 2, 4} {
		have, _ := countPrimes(context.Background(), n, workers)
		if want != have {
			t.Errorf("n=%d workers=%d: want %d, have %d", n, workers, want, have)
		}
	}
}

func TestCountPrimesCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := countPrimes(ctx, maxHeavyN, 4)
	if want, have := context.Canceled, err; !errors.Is(have, want) {
		t.Errorf("want %v, have %v", want, have)
	}
}

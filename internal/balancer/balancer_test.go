package balancer

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

var (
	_ Balancer[*target] = (*RoundRobin[*target])(nil)
	_ Balancer[*target] = (*LeastConn[*target])(nil)
)

// target is a fake worker with a settable load and availability.
type target struct {
	name string
	load atomic.Int64
	off  atomic.Bool // unavailable
}

func (t *target) Load() int64     { return t.load.Load() }
func (t *target) Available() bool { return !t.off.Load() }

// setOff makes ts unavailable, and the other members of all available.
func setOff(all []*target, ts ...*target) {
	for _, t := range all {
		t.off.Store(slices.Contains(ts, t))
	}
}
func (t *target) String() string { return t.name }

func newTargets(n int) []*target {
	ts := make([]*target, n)
	for i := range ts {
		ts[i] = &target{name: fmt.Sprintf("t%d", i)}
	}
	return ts
}

// policies constructs each policy by name, so every test that holds for
// both runs against both.
func policies(t *testing.T, f func(t *testing.T, b Balancer[*target])) {
	t.Helper()
	for _, policy := range Policies {
		t.Run(policy, func(t *testing.T) {
			b, err := New[*target](policy)
			if err != nil {
				t.Fatal(err)
			}
			f(t, b)
		})
	}
}

func addAll(b Balancer[*target], ts []*target) {
	for _, t := range ts {
		b.Add(t)
	}
}

// pickN picks n times and counts the picks per target.
func pickN(t *testing.T, b Balancer[*target], n int) map[*target]int {
	t.Helper()
	counts := map[*target]int{}
	for range n {
		p, ok := b.Pick()
		if !ok {
			t.Fatal("Pick: ok = false, want true")
		}
		counts[p]++
	}
	return counts
}

// checkEven fails unless every target in ts was counted and the counts
// differ by at most one.
func checkEven(t *testing.T, counts map[*target]int, ts []*target) {
	t.Helper()
	if want, have := len(ts), len(counts); want != have {
		t.Fatalf("picked targets: want %d, have %d (%v)", want, have, counts)
	}
	lo, hi := -1, -1
	for _, tg := range ts {
		c, ok := counts[tg]
		if !ok {
			t.Fatalf("%s never picked (%v)", tg, counts)
		}
		if lo < 0 || c < lo {
			lo = c
		}
		if c > hi {
			hi = c
		}
	}
	if hi-lo > 1 {
		t.Errorf("counts differ by %d, want at most 1: %v", hi-lo, counts)
	}
}

func TestNew(t *testing.T) {
	for _, policy := range Policies {
		b, err := New[*target](policy)
		if err != nil {
			t.Errorf("New(%q): %v", policy, err)
			continue
		}
		if b == nil {
			t.Errorf("New(%q) returned nil", policy)
		}
	}
	if _, ok := must(New[*target]("round-robin")).(*RoundRobin[*target]); !ok {
		t.Error(`New("round-robin") is not a *RoundRobin`)
	}
	if _, ok := must(New[*target]("least-conn")).(*LeastConn[*target]); !ok {
		t.Error(`New("least-conn") is not a *LeastConn`)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestNewUnknownPolicy(t *testing.T) {
	for _, policy := range []string{"", "random", "Round-Robin", "least-conn "} {
		b, err := New[*target](policy)
		if err == nil {
			t.Errorf("New(%q): want error, have nil", policy)
			continue
		}
		if want, have := fmt.Sprintf("balancer: unknown policy %q", policy), err.Error(); want != have {
			t.Errorf("New(%q) error: want %q, have %q", policy, want, have)
		}
		if b != nil {
			t.Errorf("New(%q): want nil balancer, have %T", policy, b)
		}
	}
}

func TestZeroValue(t *testing.T) {
	tg := &target{name: "a"}
	for _, b := range []Balancer[*target]{new(RoundRobin[*target]), new(LeastConn[*target])} {
		t.Run(fmt.Sprintf("%T", b), func(t *testing.T) {
			if _, ok := b.Pick(); ok {
				t.Error("Pick on zero value: ok = true, want false")
			}
			b.Add(tg)
			p, ok := b.Pick()
			if !ok || p != tg {
				t.Errorf("Pick: want %v true, have %v %v", tg, p, ok)
			}
		})
	}
}

func TestEmpty(t *testing.T) {
	policies(t, func(t *testing.T, b Balancer[*target]) {
		if want, have := 0, b.Len(); want != have {
			t.Errorf("Len: want %d, have %d", want, have)
		}
		if p, ok := b.Pick(); ok || p != nil {
			t.Errorf("Pick: want <nil> false, have %v %v", p, ok)
		}
		if want, have := 0, len(b.Members()); want != have {
			t.Errorf("Members: want %d, have %d", want, have)
		}

		// Emptied after use.
		tg := &target{name: "a"}
		b.Add(tg)
		b.Remove(tg)
		if p, ok := b.Pick(); ok || p != nil {
			t.Errorf("Pick after emptying: want <nil> false, have %v %v", p, ok)
		}
	})
}

func TestAddRemoveIdempotent(t *testing.T) {
	policies(t, func(t *testing.T, b Balancer[*target]) {
		ts := newTargets(3)
		addAll(b, ts)
		addAll(b, ts)
		b.Add(ts[0])
		if want, have := 3, b.Len(); want != have {
			t.Fatalf("Len after adding twice: want %d, have %d", want, have)
		}
		// A duplicate entry would be picked twice as often.
		checkEven(t, pickN(t, b, 300), ts)

		b.Remove(ts[1])
		b.Remove(ts[1])
		b.Remove(&target{name: "stranger"})
		if want, have := 2, b.Len(); want != have {
			t.Fatalf("Len after removing twice: want %d, have %d", want, have)
		}
		checkEven(t, pickN(t, b, 300), []*target{ts[0], ts[2]})
	})
}

func TestPickSkipsUnavailable(t *testing.T) {
	policies(t, func(t *testing.T, b Balancer[*target]) {
		ts := newTargets(4)
		addAll(b, ts)

		off := []*target{ts[0], ts[2]}
		setOff(ts, off...)
		counts := map[*target]int{}
		for range 100 {
			p, ok := b.Pick()
			if !ok {
				t.Fatal("Pick: ok = false, want true")
			}
			if slices.Contains(off, p) {
				t.Fatalf("Pick returned unavailable %v", p)
			}
			counts[p]++
		}
		if want, have := 2, len(counts); want != have {
			t.Errorf("distinct picks: want %d, have %d (%v)", want, have, counts)
		}
		// Unavailable members are still members.
		if want, have := 4, b.Len(); want != have {
			t.Errorf("Len: want %d, have %d", want, have)
		}
		if want, have := ts, b.Members(); !slices.Equal(want, have) {
			t.Errorf("Members: want %v, have %v", want, have)
		}

		// No member available: no pick.
		setOff(ts, ts...)
		if p, ok := b.Pick(); ok || p != nil {
			t.Errorf("Pick with none available: want <nil> false, have %v %v", p, ok)
		}

		// Available again: picked again.
		setOff(ts)
		checkEven(t, pickN(t, b, 400), ts)
	})
}

func TestPickAllocs(t *testing.T) {
	policies(t, func(t *testing.T, b Balancer[*target]) {
		ts := newTargets(8)
		addAll(b, ts)
		if want, have := 0.0, testing.AllocsPerRun(100, func() { b.Pick() }); want != have {
			t.Errorf("Pick allocs: want %v, have %v", want, have)
		}
		setOff(ts, ts[:3]...)
		if want, have := 0.0, testing.AllocsPerRun(100, func() { b.Pick() }); want != have {
			t.Errorf("Pick allocs with members unavailable: want %v, have %v", want, have)
		}
	})
}

// TestRemoveConcurrent checks that once Remove returns, no Pick that
// starts afterwards returns the removed target, while other goroutines keep
// picking and changing membership.
func TestRemoveConcurrent(t *testing.T) {
	policies(t, func(t *testing.T, b Balancer[*target]) {
		ts := newTargets(4)
		addAll(b, ts)
		gone := ts[0]
		others := ts[1:]
		removed := make(chan struct{})

		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 2000 {
					select {
					case <-removed:
						if p, ok := b.Pick(); ok && p == gone {
							t.Errorf("picked %v after Remove returned", p)
							return
						}
					default:
						b.Pick()
					}
				}
			})
		}
		wg.Go(func() {
			for range 200 {
				b.Remove(others[0])
				b.Add(others[0])
			}
		})
		wg.Go(func() {
			b.Remove(gone)
			close(removed)
		})
		wg.Wait()
	})
}

func TestConcurrent(t *testing.T) {
	policies(t, func(t *testing.T, b Balancer[*target]) {
		ts := newTargets(16)
		fixed, churn := ts[:4], ts[4:]
		addAll(b, fixed)
		// Half the fixed members are unavailable throughout: never picked.
		excluded := fixed[:2]
		setOff(ts, excluded...)

		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 2000 {
					p, ok := b.Pick()
					if !ok {
						t.Error("Pick: ok = false, want true")
						return
					}
					if !slices.Contains(ts, p) {
						t.Errorf("picked unknown target %v", p)
						return
					}
					if slices.Contains(excluded, p) {
						t.Errorf("picked unavailable target %v", p)
						return
					}
					p.load.Add(1)
					b.Len()
					p.load.Add(-1)
				}
			})
		}
		for i := range 2 {
			wg.Go(func() {
				for j := range 500 {
					tg := churn[(i*len(churn)/2+j)%len(churn)]
					b.Add(tg)
					b.Remove(tg)
					b.Add(tg)
				}
			})
		}
		wg.Wait()

		// The churners end with every churn target added.
		if want, have := len(ts), b.Len(); want != have {
			t.Errorf("Len: want %d, have %d", want, have)
		}
		for _, tg := range ts {
			if want, have := int64(0), tg.Load(); want != have {
				t.Errorf("%v load: want %d, have %d", tg, want, have)
			}
		}
	})
}

func TestPolicies(t *testing.T) {
	if want, have := "round-robin,least-conn", strings.Join(Policies, ","); want != have {
		t.Errorf("Policies: want %s, have %s", want, have)
	}
}

package balancer

import (
	"maps"
	"slices"
	"testing"
)

func TestRoundRobinEven(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64} {
		rr := NewRoundRobin[*target]()
		ts := newTargets(n)
		addAll(rr, ts)
		// Even for runs that are not whole cycles, too.
		for _, picks := range []int{n, n + 1, 10*n + 3} {
			checkEven(t, pickN(t, rr, picks), ts)
		}
	}
}

func TestRoundRobinOrder(t *testing.T) {
	rr := NewRoundRobin[*target]()
	ts := newTargets(3)
	addAll(rr, ts)
	var have []string
	for range 7 {
		p, _ := rr.Pick()
		have = append(have, p.name)
	}
	if want := []string{"t0", "t1", "t2", "t0", "t1", "t2", "t0"}; !slices.Equal(want, have) {
		t.Errorf("picks: want %v, have %v", want, have)
	}
}

func TestRoundRobinJoin(t *testing.T) {
	rr := NewRoundRobin[*target]()
	ts := newTargets(4)
	addAll(rr, ts[:3])
	pickN(t, rr, 5) // mid-cycle

	rr.Add(ts[3])
	counts := pickN(t, rr, len(ts))
	if counts[ts[3]] == 0 {
		t.Errorf("%v not picked within %d picks of joining: %v", ts[3], len(ts), counts)
	}
	checkEven(t, counts, ts)
	checkEven(t, pickN(t, rr, 10*len(ts)+1), ts)
}

func TestRoundRobinLeave(t *testing.T) {
	rr := NewRoundRobin[*target]()
	ts := newTargets(4)
	addAll(rr, ts)
	pickN(t, rr, 5) // mid-cycle

	gone, rest := ts[1], []*target{ts[0], ts[2], ts[3]}
	rr.Remove(gone)
	counts := pickN(t, rr, 10*len(rest)+2)
	if counts[gone] != 0 {
		t.Errorf("%v picked %d times after Remove", gone, counts[gone])
	}
	checkEven(t, counts, rest)
}

func TestRoundRobinUnavailableRotates(t *testing.T) {
	rr := NewRoundRobin[*target]()
	ts := newTargets(4)
	addAll(rr, ts)
	setOff(ts, ts[1])
	counts := map[*target]int{}
	for range 4 * 30 {
		p, _ := rr.Pick()
		counts[p]++
	}
	// The unavailable target's turns fall to its successor.
	want := map[*target]int{ts[0]: 30, ts[2]: 60, ts[3]: 30}
	if !maps.Equal(want, counts) {
		t.Errorf("counts: want %v, have %v", want, counts)
	}
}

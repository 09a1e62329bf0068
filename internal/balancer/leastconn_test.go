package balancer

import "testing"

func setLoads(ts []*target, loads ...int64) {
	for i, l := range loads {
		ts[i].load.Store(l)
	}
}

func TestLeastConnPrefersLeastLoaded(t *testing.T) {
	lc := NewLeastConn[*target]()
	ts := newTargets(4)
	addAll(lc, ts)
	setLoads(ts, 5, 9, 1, 3)
	for range 20 {
		if p, _ := lc.Pick(); p != ts[2] {
			t.Fatalf("Pick: want %v, have %v", ts[2], p)
		}
	}

	// The least loaded among those available.
	setOff(ts, ts[2])
	for range 20 {
		if p, _ := lc.Pick(); p != ts[3] {
			t.Fatalf("Pick with %v unavailable: want %v, have %v", ts[2], ts[3], p)
		}
	}
	setOff(ts)

	// Negative loads are just lower.
	ts[1].load.Store(-1)
	if p, _ := lc.Pick(); p != ts[1] {
		t.Errorf("Pick: want %v, have %v", ts[1], p)
	}
}

func TestLeastConnRotatesTies(t *testing.T) {
	lc := NewLeastConn[*target]()
	ts := newTargets(5)
	addAll(lc, ts)

	setLoads(ts, 3, 3, 3, 3, 3)
	for _, picks := range []int{5, 7, 51} {
		checkEven(t, pickN(t, lc, picks), ts)
	}

	// Only the tied least loaded targets share.
	setLoads(ts, 2, 7, 2, 9, 2)
	tied := []*target{ts[0], ts[2], ts[4]}
	for _, picks := range []int{5, 7, 51} {
		counts := pickN(t, lc, picks)
		if n := counts[ts[1]] + counts[ts[3]]; n != 0 {
			t.Errorf("more loaded targets picked %d times", n)
		}
		checkEven(t, counts, tied)
	}
}

// TestLeastConnTracksLoad simulates connections that stay open: each pick
// adds load, so picks spread evenly and a new member is preferred.
func TestLeastConnTracksLoad(t *testing.T) {
	lc := NewLeastConn[*target]()
	ts := newTargets(4)
	addAll(lc, ts[:3])
	for range 30 {
		p, _ := lc.Pick()
		p.load.Add(1)
	}
	for _, tg := range ts[:3] {
		if want, have := int64(10), tg.Load(); want != have {
			t.Errorf("%v load: want %d, have %d", tg, want, have)
		}
	}

	lc.Add(ts[3])
	for range 10 {
		p, _ := lc.Pick()
		if p != ts[3] {
			t.Fatalf("Pick: want new member %v, have %v", ts[3], p)
		}
		p.load.Add(1)
	}
	checkEven(t, pickN(t, lc, 4), ts)
}

func TestLeastConnLeave(t *testing.T) {
	lc := NewLeastConn[*target]()
	ts := newTargets(3)
	addAll(lc, ts)
	setLoads(ts, 0, 5, 5)
	lc.Remove(ts[0])
	counts := pickN(t, lc, 20)
	if counts[ts[0]] != 0 {
		t.Errorf("%v picked %d times after Remove", ts[0], counts[ts[0]])
	}
	checkEven(t, counts, ts[1:])
}

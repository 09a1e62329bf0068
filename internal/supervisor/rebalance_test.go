package supervisor

import (
	"maps"
	"slices"
	"testing"
)

func TestPlanRebalance(t *testing.T) {
	m := func(open ...int64) []rebalanceMember {
		var ms []rebalanceMember
		for _, o := range open {
			ms = append(ms, rebalanceMember{open: o, askable: true})
		}
		return ms
	}
	for _, c := range []struct {
		name    string
		members []rebalanceMember
		coming  int64
		want    map[int]int64
		asks    []rebalanceAsk
	}{
		{"even", m(16, 16, 16, 16), 0, nil, nil},
		{"within one", m(17, 17, 16, 16), 0, nil, nil},
		{"scale-up", m(32, 32, 0, 0), 0, map[int]int64{2: 16, 3: 16}, []rebalanceAsk{{0, 16}, {1, 16}}},
		{"remainder to the busiest", m(33, 31, 0), 0, map[int]int64{2: 21}, []rebalanceAsk{{0, 11}, {1, 10}}},
		// A reload: the new workers are under their share only because
		// the old ones still drain; the drain fills them, nobody is asked.
		{"reload draining", m(16, 0), 48, map[int]int64{0: 16, 1: 32}, nil},
		// A scale-up while a reload's worker still drains: its 16 count,
		// so the busiest gives back 16, not 24, and the new workers get
		// both.
		{"scale-up while draining", m(32, 16, 0, 0), 16, map[int]int64{2: 16, 3: 16}, []rebalanceAsk{{0, 16}}},
		{"asked lately", []rebalanceMember{{32, false}, {32, true}, {0, true}, {0, true}}, 0,
			map[int]int64{2: 16, 3: 16}, []rebalanceAsk{{1, 16}}},
		{"one worker", m(10), 0, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := planRebalance(c.members, c.coming)
			if len(p.want) != 0 || len(c.want) != 0 {
				if !maps.Equal(p.want, c.want) {
					t.Errorf("want %v, expected %v", p.want, c.want)
				}
			}
			if !slices.Equal(p.asks, c.asks) {
				t.Errorf("asks %v, expected %v", p.asks, c.asks)
			}
		})
	}
}

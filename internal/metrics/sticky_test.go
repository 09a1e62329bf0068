package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A sticky policy's figures are exported, and pass the linter; without one
// there is no sticky series.
func TestStickySeries(t *testing.T) {
	src := &fakeSource{}
	snap := busySnapshot()
	snap.Sticky = &Sticky{Hits: 10, Fallbacks: 2, PeekTimeouts: 1, HoldExpired: 3, ProxyRejected: 4, TableKeys: 5,
		Evicted: 6, Expired: 7, Forgotten: 8, SlotKeys: map[int]int{1: 5}, SlotConns: map[int]uint64{1: 9}}
	src.set(snap, nil)
	m := New(src.Snapshot)
	s := serve(t, m)
	checkSeries(t, scrape(t, s), []series{
		{"prefork_sticky_hits_total", nil, 10},
		{"prefork_sticky_fallbacks_total", nil, 2},
		{"prefork_sticky_peek_timeouts_total", nil, 1},
		{"prefork_sticky_hold_expired_total", nil, 3},
		{"prefork_proxy_header_rejections_total", nil, 4},
		{"prefork_sticky_table_keys", nil, 5},
		{"prefork_sticky_table_evictions_total", []string{"reason", "lru"}, 6},
		{"prefork_sticky_table_evictions_total", []string{"reason", "age"}, 7},
		{"prefork_sticky_table_evictions_total", []string{"reason", "generation"}, 8},
		{"prefork_sticky_slot_keys", []string{"slot", "1"}, 5},
		{"prefork_sticky_slot_connections_total", []string{"slot", "1"}, 9},
	})
	problems, err := testutil.GatherAndLint(m.registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	src.set(busySnapshot(), nil)
	if _, ok := sample(scrape(t, s), "prefork_sticky_hits_total"); ok {
		t.Fatal("sticky series without a sticky policy")
	}
}

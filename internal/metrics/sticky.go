package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Sticky is the sticky policy's figures (-sticky, -proxy-protocol).
type Sticky struct {
	Hits, Fallbacks, PeekTimeouts, HoldExpired, ProxyRejected uint64
	TableKeys                                                 int
	Evicted, Expired, Forgotten                               uint64         // claimed keys dropped: LRU, age, generation
	SlotKeys                                                  map[int]int    // claimed keys per slot
	SlotConns                                                 map[int]uint64 // connections sent by key per slot
}

type stickyDescs struct {
	hits, fallbacks, timeouts, holdExpired, proxyRejected, tableKeys, evictions, slotKeys, slotConns *prometheus.Desc
}

func newStickyDescs(d func(name, help string, labels ...string) *prometheus.Desc) stickyDescs {
	return stickyDescs{
		hits:          d("sticky_hits_total", "Connections sent by their sticky key to its slot."),
		fallbacks:     d("sticky_fallbacks_total", "Connections without a sticky key or a slot for it, sent by -balance or to the next slot by hash."),
		timeouts:      d("sticky_peek_timeouts_total", "Connections whose sticky key did not arrive within -sticky-wait (or whose claim did not come)."),
		holdExpired:   d("sticky_hold_expired_total", "Keyed connections that waited -sticky-hold for their slot's worker in vain and went to another slot."),
		proxyRejected: d("proxy_header_rejections_total", "Connections closed for their PROXY header: untrusted source, malformed, truncated or too slow."),
		tableKeys:     d("sticky_table_keys", "Keys workers claimed, in the table now."),
		evictions:     d("sticky_table_evictions_total", "Claimed keys dropped from the table, by reason: lru (size bound), age (-sticky-table-age), generation (-sticky-forget).", "reason"),
		slotKeys:      d("sticky_slot_keys", "Keys claimed by each slot.", "slot"),
		slotConns:     d("sticky_slot_connections_total", "Connections sent to each slot by sticky key.", "slot"),
	}
}

func (s stickyDescs) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.hits, s.fallbacks, s.timeouts, s.holdExpired, s.proxyRejected, s.tableKeys, s.evictions, s.slotKeys, s.slotConns} {
		ch <- d
	}
}

func (s stickyDescs) collect(ch chan<- prometheus.Metric, st *Sticky) {
	if st == nil {
		return
	}
	ch <- constMetric(s.hits, prometheus.CounterValue, float64(st.Hits))
	ch <- constMetric(s.fallbacks, prometheus.CounterValue, float64(st.Fallbacks))
	ch <- constMetric(s.timeouts, prometheus.CounterValue, float64(st.PeekTimeouts))
	ch <- constMetric(s.holdExpired, prometheus.CounterValue, float64(st.HoldExpired))
	ch <- constMetric(s.proxyRejected, prometheus.CounterValue, float64(st.ProxyRejected))
	ch <- constMetric(s.tableKeys, prometheus.GaugeValue, float64(st.TableKeys))
	ch <- constMetric(s.evictions, prometheus.CounterValue, float64(st.Evicted), "lru")
	ch <- constMetric(s.evictions, prometheus.CounterValue, float64(st.Expired), "age")
	ch <- constMetric(s.evictions, prometheus.CounterValue, float64(st.Forgotten), "generation")
	for slot, n := range st.SlotKeys {
		ch <- constMetric(s.slotKeys, prometheus.GaugeValue, float64(n), strconv.Itoa(slot))
	}
	for slot, n := range st.SlotConns {
		ch <- constMetric(s.slotConns, prometheus.CounterValue, float64(n), strconv.Itoa(slot))
	}
}

package control

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// StickyStatus is the sticky policy (-sticky, -proxy-protocol) as ctl
// status shows it; the per-slot figures are in each WorkerStatus.
type StickyStatus struct {
	Key            string `json:"key,omitempty"`   // -sticky; "" with -proxy-protocol alone
	TableKeys      int    `json:"table_keys"`      // keys workers claimed, now
	Hits           uint64 `json:"hits"`            // keyed connections sent to their slot
	Fallbacks      uint64 `json:"fallbacks"`       // connections without a key or slot: by -balance or the next slot
	PeekTimeouts   uint64 `json:"peek_timeouts"`   // connections whose key did not come within -sticky-wait
	HoldExpired    uint64 `json:"hold_expired"`    // keyed connections that waited -sticky-hold for their slot in vain
	ProxyRejected  uint64 `json:"proxy_rejected"`  // connections closed for their PROXY header
	TableEvicted   uint64 `json:"table_evicted"`   // claimed keys dropped for room (LRU)
	TableExpired   uint64 `json:"table_expired"`   // claimed keys dropped unused for -sticky-table-age
	TableForgotten uint64 `json:"table_forgotten"` // claimed keys dropped with their slot's worker generation
	Held           int    `json:"held"`            // connections waiting for their slot's worker or a claim now
	Peeking        int    `json:"peeking"`         // connections whose first bytes are awaited now
}

// writeSticky writes the sticky line of ctl status, and one line of keys
// per slot.
func writeSticky(w io.Writer, st *Status) error {
	s := st.Sticky
	if s == nil {
		return nil
	}
	key := s.Key
	if key == "" {
		key = "-"
	}
	_, err := fmt.Fprintf(w, "sticky key=%s claimed_keys=%d hits=%d fallbacks=%d peek_timeouts=%d hold_expired=%d held=%d peeking=%d proxy_rejected=%d table_evicted=%d table_expired=%d table_forgotten=%d\n",
		printable(key), s.TableKeys, s.Hits, s.Fallbacks, s.PeekTimeouts, s.HoldExpired, s.Held, s.Peeking,
		s.ProxyRejected, s.TableEvicted, s.TableExpired, s.TableForgotten)
	if err != nil || s.Key == "" {
		return err
	}
	slots := map[int]WorkerStatus{}
	for _, ws := range st.Workers {
		slots[ws.Slot] = ws
	}
	ids := make([]int, 0, len(slots))
	for id := range slots {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d:keys=%d,conns=%d", id, slots[id].StickyKeys, slots[id].StickyConns)
	}
	_, err = fmt.Fprintf(w, "sticky slots %s\n", strings.Join(parts, " "))
	return err
}

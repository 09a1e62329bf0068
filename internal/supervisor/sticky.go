package supervisor

import (
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/metrics"
	"github.com/prefork/prefork/internal/proxyproto"
	"github.com/prefork/prefork/internal/settings"
	"github.com/prefork/prefork/internal/sticky"
)

// stick gives rr's handoff the sticky policy (-sticky) and the PROXY
// header reading (-proxy-protocol) cfg asks for, if any. A zero duration
// or size (a Go program's Settings) is the default.
func stick(h *handoff.Handoff, cfg Config) error {
	if cfg.Sticky == "" && !cfg.ProxyProtocol {
		return nil
	}
	sc := handoff.StickyConfig{
		Wait:      orDefault(cfg.StickyWait, settings.DefaultStickyWait),
		Hold:      orDefault(cfg.StickyHold, settings.DefaultStickyHold),
		Forget:    cfg.StickyForget,
		Proxy:     cfg.ProxyProtocol,
		ProxyWait: orDefault(cfg.ProxyWait, settings.DefaultProxyWait),
	}
	if sc.Forget == "" {
		sc.Forget = settings.StickyForgetGeneration
	}
	var err error
	if sc.Trust, err = proxyproto.ParseTrust(cfg.ProxyFrom); err != nil {
		return err
	}
	if cfg.Sticky != "" {
		if sc.Key, err = sticky.ParseKey(cfg.Sticky); err != nil {
			return err
		}
		sc.Table = sticky.NewTable(orDefault(cfg.StickyTable, settings.DefaultStickyTable), cfg.StickyTableAge, nil)
	}
	return h.Stick(sc)
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// stickyStatus is h's sticky policy for ctl status; it fills in each
// worker's slot figures.
func stickyStatus(h *handoff.Handoff, workers []control.WorkerStatus) *control.StickyStatus {
	ss := h.StickyStats()
	for i := range workers {
		workers[i].StickyKeys = ss.Table.PerSlot[workers[i].Slot]
		workers[i].StickyConns = ss.Keyed[workers[i].Slot]
	}
	return &control.StickyStatus{Key: ss.Key, TableKeys: ss.Table.Len, Hits: ss.Hits, Fallbacks: ss.Fallbacks,
		PeekTimeouts: ss.PeekTimeouts, HoldExpired: ss.HoldExpired, ProxyRejected: ss.ProxyRejected,
		TableEvicted: ss.Table.Evicted, TableExpired: ss.Table.Expired, TableForgotten: ss.Table.Forgotten,
		Held: ss.Held, Peeking: ss.Peeking}
}

// stickySnapshot is h's sticky policy for a metrics scrape; nil without
// one.
func stickySnapshot(h *handoff.Handoff, cfg Config) *metrics.Sticky {
	if h == nil || cfg.Sticky == "" && !cfg.ProxyProtocol {
		return nil
	}
	ss := h.StickyStats()
	return &metrics.Sticky{Hits: ss.Hits, Fallbacks: ss.Fallbacks, PeekTimeouts: ss.PeekTimeouts,
		HoldExpired: ss.HoldExpired, ProxyRejected: ss.ProxyRejected, TableKeys: ss.Table.Len,
		Evicted: ss.Table.Evicted, Expired: ss.Table.Expired, Forgotten: ss.Table.Forgotten,
		SlotKeys: ss.Table.PerSlot, SlotConns: ss.Keyed}
}

package settings

import (
	"flag"
	"time"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/proxyproto"
	"github.com/prefork/prefork/internal/sticky"
)

// Stickiness is how rr mode keeps a client's connections on one slot, and
// what a listener expects of the connections a load balancer opens:
// Settings' fields of the same names.
type Stickiness struct {
	Sticky         string        // the key: ip, cookie:NAME, header:NAME, query:NAME, socketio; "" for none
	StickyWait     time.Duration // how long a connection's first bytes are awaited for its key (500ms)
	StickyHold     time.Duration // how long a keyed connection waits for its slot's restarting worker (5s)
	StickyTable    int           // keys workers claimed, at most (100000; least recently used go first)
	StickyTableAge time.Duration // a claimed key unused this long is forgotten (1h; 0: never)
	StickyForget   string        // when a slot's claims are forgotten: StickyForgetGeneration (default), StickyForgetWorker, StickyForgetNever

	ProxyProtocol bool          // every connection starts with a PROXY protocol v1 or v2 header
	ProxyFrom     string        // CIDR,...: the only sources a header is taken from (others are closed); "" for any
	ProxyWait     time.Duration // how long a connection's PROXY header may take (1s)
}

// When a slot's claimed keys are forgotten (Settings.StickyForget).
const (
	StickyForgetGeneration = "generation" // when a reload gives the slot a worker of a new generation
	StickyForgetWorker     = "worker"     // whenever the slot gets a new worker, a respawn too
	StickyForgetNever      = "never"      // only by the table's bounds
)

// Defaults of the sticky settings.
const (
	DefaultStickyWait     = 500 * time.Millisecond
	DefaultStickyHold     = 5 * time.Second
	DefaultStickyTable    = 100000
	DefaultStickyTableAge = time.Hour
	DefaultProxyWait      = time.Second
)

func stickyFlags(fs *flag.FlagSet, c *Stickiness) {
	fs.StringVar(&c.Sticky, "sticky", "", "rr: keep a client on one worker slot by `KEY`: ip, cookie:NAME, header:NAME, query:NAME or socketio")
	fs.DurationVar(&c.StickyWait, "sticky-wait", DefaultStickyWait, "how long a connection's first bytes are awaited for its -sticky key")
	fs.DurationVar(&c.StickyHold, "sticky-hold", DefaultStickyHold, "how long a keyed connection waits for its slot's restarting worker")
	fs.IntVar(&c.StickyTable, "sticky-table", DefaultStickyTable, "keys workers claimed, at most (least recently used go first)")
	fs.DurationVar(&c.StickyTableAge, "sticky-table-age", DefaultStickyTableAge, "a claimed key unused this long is forgotten (0: never)")
	fs.StringVar(&c.StickyForget, "sticky-forget", StickyForgetGeneration, "forget a slot's claimed keys when it gets a worker of a new generation, any new worker, or never")
	fs.BoolVar(&c.ProxyProtocol, "proxy-protocol", false, "every connection starts with a PROXY protocol v1 or v2 header (behind a load balancer)")
	fs.StringVar(&c.ProxyFrom, "proxy-from", "", "take PROXY headers only from these `CIDR,...` (others are closed); default: any source")
	fs.DurationVar(&c.ProxyWait, "proxy-wait", DefaultProxyWait, "how long a connection's PROXY header may take")
}

func (c *Settings) validateSticky(n naming) error {
	if c.Sticky != "" {
		if _, err := sticky.ParseKey(c.Sticky); err != nil {
			return usagef("invalid value %q for %s: %v", c.Sticky, n.the("Sticky"), err)
		}
		if c.Mode != ipc.ModeRR {
			return usagef("%s needs -mode rr: only there does the supervisor pick each connection's worker", n.the("Sticky"))
		}
	}
	for field, d := range map[string]time.Duration{"StickyWait": c.StickyWait, "StickyHold": c.StickyHold, "StickyTableAge": c.StickyTableAge, "ProxyWait": c.ProxyWait} {
		if d < 0 {
			return usagef("invalid value %v for %s: must not be negative", d, n.the(field))
		}
	}
	if c.StickyTable < 0 {
		return usagef("invalid value %d for %s: must not be negative", c.StickyTable, n.the("StickyTable"))
	}
	switch c.StickyForget {
	case "", StickyForgetGeneration, StickyForgetWorker, StickyForgetNever:
	default:
		return usagef("invalid value %q for %s: must be generation, worker or never", c.StickyForget, n.the("StickyForget"))
	}
	if _, err := proxyproto.ParseTrust(c.ProxyFrom); err != nil {
		return usagef("invalid value %q for %s: %v", c.ProxyFrom, n.the("ProxyFrom"), err)
	}
	if c.ProxyFrom != "" && !c.ProxyProtocol {
		return usagef("%s needs -proxy-protocol", n.the("ProxyFrom"))
	}
	if c.ProxyProtocol && c.Mode != ipc.ModeRR && c.WorkerProtocol != "" && c.WorkerProtocol != ProtocolPrefork {
		return usagef("%s in %s mode needs Go workers (-worker-protocol prefork), whose listener reads the header; in rr mode the supervisor reads it for any worker", n.the("ProxyProtocol"), c.Mode)
	}
	return nil
}

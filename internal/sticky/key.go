package sticky

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// MaxPeek bounds the bytes of a connection a key is looked for in: a
// request head larger than this has no key.
const MaxPeek = 8 << 10

// Key finds the sticky key of a connection. It is a value: a kind's
// parser fills in the functions and bounds.
type Key struct {
	Spec string // as given on the command line: "cookie:sid"

	// Peek: the key is in the connection's first bytes, which the handoff
	// peeks (never consumes) before it picks a worker, for at most
	// -sticky-wait. False: Find gets none (ip).
	Peek bool

	// Find returns the key of a connection from head, its first bytes
	// (nil unless Peek), and its client's address; "" for none. more: no
	// key yet, and more bytes may hold one (the request head is not
	// complete and is under MaxPeek). It must not keep head.
	Find func(head []byte, peer ipc.Peer) (key string, more bool)

	// ClaimedOnly: a key goes to a slot only if a worker claimed it (the
	// Table); one nobody claimed goes by -balance, not by hashing. For
	// keys a worker makes up (socket.io's sids), a hash would pick a
	// worker that does not know them.
	ClaimedOnly bool

	// AwaitClaim is how long a connection whose key nobody claimed waits
	// for a claim before it goes on without one; zero: it does not wait.
	// socket.io's worker reports a new sid just after it answers the
	// handshake, so the client's next request can arrive first.
	AwaitClaim time.Duration
}

var (
	kindsMu sync.Mutex
	kinds   = map[string]func(arg string) (Key, error){}
)

// RegisterKey adds a kind of key: -sticky KIND or -sticky KIND:ARG gives
// ARG ("" if none) to parse. Call it from an init func.
func RegisterKey(kind string, parse func(arg string) (Key, error)) {
	kindsMu.Lock()
	defer kindsMu.Unlock()
	if _, dup := kinds[kind]; dup {
		panic("sticky: key kind registered twice: " + kind)
	}
	kinds[kind] = parse
}

// Kinds lists the registered kinds, sorted.
func Kinds() []string {
	kindsMu.Lock()
	defer kindsMu.Unlock()
	ks := make([]string, 0, len(kinds))
	for k := range kinds {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// ParseKey parses a -sticky value: ip, cookie:NAME, header:NAME,
// query:NAME, or a kind another file registered.
func ParseKey(spec string) (Key, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	kindsMu.Lock()
	parse := kinds[kind]
	kindsMu.Unlock()
	if parse == nil {
		return Key{}, fmt.Errorf("sticky: unknown key %q: must be one of %s (NAME after a colon)", spec, strings.Join(Kinds(), ", "))
	}
	k, err := parse(arg)
	if err != nil {
		return Key{}, fmt.Errorf("sticky: %s: %w", spec, err)
	}
	k.Spec = spec
	return k, nil
}

func init() {
	RegisterKey("ip", func(arg string) (Key, error) {
		if arg != "" {
			return Key{}, fmt.Errorf("ip takes no name")
		}
		return Key{Find: findIP}, nil
	})
}

// findIP is the client's address without its port: every connection of a
// client goes to the same slot. Behind a proxy, the address is the one its
// PROXY header gave (the handoff reads it before it picks).
func findIP(_ []byte, peer ipc.Peer) (string, bool) {
	a, ok := PeerIP(peer)
	if !ok {
		return "", false
	}
	return string(a.AsSlice()), false
}

// PeerIP is the address in a peer record; false if it is unknown.
func PeerIP(p ipc.Peer) (netip.Addr, bool) {
	switch p[0] {
	case 4:
		return netip.AddrFrom4([4]byte(p[3:7])), true
	case 6:
		return netip.AddrFrom16([16]byte(p[3:19])).Unmap(), true
	}
	return netip.Addr{}, false
}

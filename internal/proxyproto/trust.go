package proxyproto

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/prefork/prefork/internal/ipc"
)

// Trust is the set of sources whose PROXY headers are believed
// (-proxy-from); empty: every source.
type Trust []netip.Prefix

// ParseTrust parses "CIDR,CIDR,...": a bare address is its own /32 or
// /128.
func ParseTrust(s string) (Trust, error) {
	var t Trust
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("proxyproto: %q is not an address or CIDR", f)
			}
			t = append(t, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("proxyproto: %q is not an address or CIDR", f)
		}
		t = append(t, p.Masked())
	}
	return t, nil
}

// Allows reports whether a connection from a may send a header.
func (t Trust) Allows(a netip.Addr) bool {
	if len(t) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// String is the -proxy-from form.
func (t Trust) String() string {
	s := make([]string, len(t))
	for i, p := range t {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Peer is ap as a conns frame carries it (ipc.Peer).
func Peer(ap netip.AddrPort) ipc.Peer {
	var p ipc.Peer
	a := ap.Addr().Unmap()
	binary.BigEndian.PutUint16(p[1:3], ap.Port())
	switch {
	case a.Is4():
		p[0] = 4
		b := a.As4()
		copy(p[3:], b[:])
	case a.Is6():
		p[0] = 6
		b := a.As16()
		copy(p[3:], b[:])
	}
	return p
}

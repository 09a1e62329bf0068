package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// MaxHeader bounds a header: v1's is at most 107 bytes; a v2 header
// longer than this (its TLVs) is refused.
const MaxHeader = 1024

// Errors Parse returns.
var (
	// ErrIncomplete: the bytes so far are a valid start; read more.
	ErrIncomplete = errors.New("proxyproto: incomplete header")
	// ErrInvalid: not a PROXY header, or a malformed one.
	ErrInvalid = errors.New("proxyproto: invalid header")
)

// sigV2 starts every v2 header.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Parse reads the header at the start of b and returns its length and
// the client address it names; the zero AddrPort for a LOCAL (v2) or
// UNKNOWN (v1) header, whose connection is the proxy's own (a health
// check): it is served with the proxy's address.
func Parse(b []byte) (int, netip.AddrPort, error) {
	switch {
	case len(b) == 0:
		return 0, netip.AddrPort{}, ErrIncomplete
	case b[0] == '\r':
		if !bytes.HasPrefix(b, sigV2[:min(len(b), len(sigV2))]) {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: bad v2 signature", ErrInvalid)
		}
		return parseV2(b)
	case b[0] == 'P':
		return parseV1(b)
	}
	return 0, netip.AddrPort{}, fmt.Errorf("%w: no PROXY signature", ErrInvalid)
}

// parseV1: "PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n", at most 107
// bytes.
func parseV1(b []byte) (int, netip.AddrPort, error) {
	const maxV1 = 107
	if !bytes.HasPrefix(b, []byte("PROXY "[:min(len(b), 6)])) {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: no PROXY signature", ErrInvalid)
	}
	end := bytes.Index(b[:min(len(b), maxV1)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= maxV1 {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header longer than %d bytes", ErrInvalid, maxV1)
		}
		return 0, netip.AddrPort{}, ErrIncomplete
	}
	f := bytes.Split(b[:end], []byte(" "))
	n := end + 2
	if len(f) >= 2 && string(f[1]) == "UNKNOWN" {
		return n, netip.AddrPort{}, nil
	}
	if len(f) != 6 || (string(f[1]) != "TCP4" && string(f[1]) != "TCP6") {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header %q", ErrInvalid, b[:end])
	}
	ip, err := netip.ParseAddr(string(f[2]))
	if err != nil || ip.Is4() != (string(f[1]) == "TCP4") {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 source address %q", ErrInvalid, f[2])
	}
	port, err := strconv.ParseUint(string(f[4]), 10, 16)
	if err != nil {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 source port %q", ErrInvalid, f[4])
	}
	return n, netip.AddrPortFrom(ip, uint16(port)), nil
}

// parseV2: the signature, version and command, family and protocol, the
// length of the rest, then the addresses (and TLVs, skipped).
func parseV2(b []byte) (int, netip.AddrPort, error) {
	if len(b) < 16 {
		return 0, netip.AddrPort{}, ErrIncomplete
	}
	ver, cmd := b[12]>>4, b[12]&0xf
	if ver != 2 || cmd > 1 {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 version %d command %d", ErrInvalid, ver, cmd)
	}
	n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxHeader {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 header of %d bytes, more than %d", ErrInvalid, n, MaxHeader)
	}
	if len(b) < n {
		return 0, netip.AddrPort{}, ErrIncomplete
	}
	if cmd == 0 { // LOCAL: the proxy's own connection
		return n, netip.AddrPort{}, nil
	}
	a := b[16:n]
	switch b[13] {
	case 0x11, 0x12: // TCP or UDP over IPv4: src, dst, sport, dport
		if len(a) < 12 {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 IPv4 addresses truncated", ErrInvalid)
		}
		return n, netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10])), nil
	case 0x21, 0x22: // over IPv6
		if len(a) < 36 {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 IPv6 addresses truncated", ErrInvalid)
		}
		return n, netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:34])), nil
	case 0x00: // UNSPEC: no address
		return n, netip.AddrPort{}, nil
	}
	return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 family and protocol %#x", ErrInvalid, b[13])
}

package ipc

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PeerSize is the size of a peer record in a conns frame: a family byte
// (peer4, peer6, or peerUnknown: ask the kernel), the port (big-endian) and
// the address (16 bytes, IPv4 in the first 4). With FeatureListeners a
// record is one byte longer (RecordSize): the index of the listener the
// connection came from, in the worker's listener order.
const PeerSize = 1 + 2 + 16

// RecordSize is a conns frame's record with FeatureListeners: the peer
// and its listener's index.
const RecordSize = PeerSize + 1

// Peer is one connection's peer address, as a conns frame carries it,
// and the index of the listener it came from (its last byte, sent only
// with FeatureListeners).
type Peer [RecordSize]byte

// Listener is the index of the listener the connection came from.
func (p *Peer) Listener() int { return int(p[PeerSize]) }

// SetListener records the index of the listener the connection came from.
func (p *Peer) SetListener(i int) { p[PeerSize] = byte(i) }

const (
	peerUnknown = 0
	peer4       = 4
	peer6       = 6
)

// PeerOf records the address accept4 wrote to sa. An address it cannot
// carry whole (another family, an IPv6 scope) is recorded as unknown, and
// the worker asks the kernel for it.
func PeerOf(sa *unix.RawSockaddrAny) Peer {
	var p Peer
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p[0] = peer4
		copy(p[1:3], (*[2]byte)(unsafe.Pointer(&in.Port))[:]) // network order already
		copy(p[3:], in.Addr[:])
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		if in.Scope_id == 0 {
			p[0] = peer6
			copy(p[1:3], (*[2]byte)(unsafe.Pointer(&in.Port))[:])
			copy(p[3:], in.Addr[:])
		}
	}
	return p
}

// PeerOfAddr records a, as PeerOf does for a raw address: unknown unless
// a is a *net.TCPAddr with an IPv4 or unscoped IPv6 address.
func PeerOfAddr(a net.Addr) Peer {
	var p Peer
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.Zone != "" {
		return p
	}
	binary.BigEndian.PutUint16(p[1:3], uint16(ta.Port))
	if ip4 := ta.IP.To4(); ip4 != nil {
		p[0] = peer4
		copy(p[3:], ip4)
	} else if len(ta.IP) == 16 {
		p[0] = peer6
		copy(p[3:], ta.IP)
	}
	return p
}

// PeerAddr decodes the first record of recs (as Frame.Peers returns them)
// into a TCP address; nil when the record says unknown.
func PeerAddr(recs []byte) *net.TCPAddr {
	if len(recs) < PeerSize {
		return nil
	}
	port := int(binary.BigEndian.Uint16(recs[1:3]))
	switch recs[0] {
	case peer4:
		return &net.TCPAddr{IP: net.IP(append(make([]byte, 0, 4), recs[3:7]...)), Port: port}
	case peer6:
		return &net.TCPAddr{IP: net.IP(append(make([]byte, 0, 16), recs[3:19]...)), Port: port}
	}
	return nil
}

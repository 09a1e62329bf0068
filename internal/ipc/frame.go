package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Version is the frame format version this package speaks.
const Version = 1

// HeaderSize is the size of the frame header: version, type, uint16 length.
const HeaderSize = 4

// MaxFrame bounds a frame, header included. Receivers size buffers to it.
const MaxFrame = HeaderSize + 0xffff

// MaxFDs bounds the descriptors in one handoff frame.
const MaxFDs = 64

// Type says what a frame carries.
type Type uint8

const (
	// TypeReady (worker → supervisor): the worker serves. Payload: empty,
	// or the [Features] the worker uses, uint32, when the supervisor
	// offered some in EnvFeatures (a supervisor that offered none expects
	// an empty payload).
	TypeReady Type = 1 + iota
	// TypeHeartbeat (worker → supervisor): a [Heartbeat], sent every second.
	// Its payload is 29 bytes, or 29 plus a latency histogram from a
	// worker that uses [FeatureLatency].
	TypeHeartbeat
	// TypeLoad (worker → supervisor): connections the worker has closed
	// since it started, uint32, wrapping. The supervisor counts what it
	// handed over, so the difference is the worker's open connections,
	// exact even while handoffs are in flight.
	TypeLoad
	// TypeDrain (supervisor → worker): stop accepting, finish, exit.
	// Payload: the grace period in milliseconds, uint32.
	TypeDrain
	// TypeConns (supervisor → worker, handoff channel): accepted
	// connections as SCM_RIGHTS, non-blocking (the flag belongs to the open
	// file, so the worker need not set it). Payload: their count, uint8;
	// then, only to a worker that uses [FeaturePeers], one [Peer] per
	// connection in the order of the descriptors. The other way (worker →
	// supervisor, handoff channel, only with [FeatureHandBack]): idle
	// keep-alive connections the worker hands back, always with their
	// peers, for the supervisor to hand to another worker.
	TypeConns
	// TypeMessage (either way): opaque bytes for the application.
	TypeMessage
	// TypePause (worker → supervisor, control channel, only when the
	// supervisor offered [FeaturePause]): the worker is close to its
	// descriptor limit; send it no more connections until TypeResume.
	// Connections already queued for it are still served. Payload: empty.
	TypePause
	// TypeResume (worker → supervisor, control channel): the worker that
	// sent TypePause has room again. Payload: empty. A worker starts
	// resumed, and sends Pause and Resume alternately, Pause first.
	TypeResume
	// TypeLeave (worker → supervisor, control channel): the worker leaves
	// on its own (cluster.Disconnect, Node's worker.disconnect() in a
	// worker): it drains and exits, and its exit is no crash. Payload:
	// empty.
	TypeLeave
	// TypeGiveBack (supervisor → worker, control channel, only to a worker
	// that uses [FeatureHandBack]): hand back up to n of the connections
	// idle between requests now, for the supervisor to move to less busy
	// workers (rebalancing after a scale-up). Payload: n, uint32.
	TypeGiveBack
	// TypeClaim (worker → supervisor, control channel, only when the
	// supervisor offered [FeatureClaim]): route connections with this
	// sticky key to the worker's slot from now on (a session id it made
	// up). Payload: the key, 1 to MaxClaim bytes.
	TypeClaim
	// TypeClaimed (supervisor → worker, control channel): the oldest claim
	// not yet answered is in force; the worker may give the client its
	// key. Payload: empty.
	TypeClaimed
	typeEnd
)

// MaxClaim bounds a claimed key.
const MaxClaim = 1024

func (t Type) String() string {
	switch t {
	case TypeReady:
		return "ready"
	case TypeHeartbeat:
		return "heartbeat"
	case TypeLoad:
		return "load"
	case TypeDrain:
		return "drain"
	case TypeConns:
		return "conns"
	case TypeMessage:
		return "message"
	case TypePause:
		return "pause"
	case TypeResume:
		return "resume"
	case TypeLeave:
		return "leave"
	case TypeGiveBack:
		return "giveback"
	case TypeClaim:
		return "claim"
	case TypeClaimed:
		return "claimed"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// payloadSize is the exact payload size of each fixed-size type; -1 means
// variable.
var payloadSize = [typeEnd]int{
	TypeReady:     -1, // 0 or 4: see Decode
	TypeHeartbeat: -1, // heartbeatSize, or more with latency: see Decode
	TypeLoad:      4,
	TypeDrain:     4,
	TypeConns:     -1, // 1, or 1 + PeerSize per connection: see Decode
	TypeMessage:   -1,
	TypePause:     0,
	TypeResume:    0,
	TypeLeave:     0,
	TypeGiveBack:  4,
	TypeClaim:     -1,
	TypeClaimed:   0,
}

// Features are optional parts of the protocol, as a bit set. The supervisor
// offers the ones it understands in EnvFeatures; the worker answers in its
// ready frame with the ones it uses. Either side may be older than the
// other: a worker that was offered nothing sends an empty ready frame, and
// a supervisor sends a worker only what the worker said it uses.
type Features uint32

const (
	// FeaturePeers: conns frames carry each connection's peer address, so
	// the worker need not ask the kernel (a getpeername per connection).
	FeaturePeers Features = 1 << iota
	// FeaturePause: the worker may send TypePause and TypeResume, and the
	// supervisor then hands a paused worker no connections. Without it a
	// worker out of descriptors loses the connections the kernel cannot
	// install (see ErrFDsTruncated).
	FeaturePause
	// FeatureLatency: heartbeats carry the worker's request latency
	// histogram ([Heartbeat.Latency]). A supervisor that does not offer
	// it rejects a heartbeat of any other size than the first one's.
	FeatureLatency
	// FeatureHandBack (rr): the worker may hand connections back on its
	// handoff channel (a conns frame the other way) when it drains: HTTP/1.1
	// connections idle between requests, of which it has read nothing of
	// the next request. The supervisor reads its end of the channel and
	// hands them to another worker.
	FeatureHandBack
	// FeatureClaim: the worker may claim sticky keys (TypeClaim).
	FeatureClaim
	// FeatureOutcomes: heartbeats that carry a latency histogram also carry
	// the requests counted by how they ended ([Heartbeat.Outcomes]: status
	// class, handler panics), which a canary reload judges a release by.
	FeatureOutcomes
	// FeatureListeners (rr, with FeaturePeers): each peer record of a
	// conns frame has one more byte, the index of the listener the
	// connection came from (RecordSize), so a worker serving several
	// listeners gives each connection to its own.
	FeatureListeners

	// Supported is every feature this package implements.
	Supported = FeaturePeers | FeaturePause | FeatureLatency | FeatureHandBack | FeatureClaim | FeatureOutcomes | FeatureListeners
)

// featureNames are the features' names, in the order String lists them.
var featureNames = []struct {
	f    Features
	name string
}{
	{FeaturePeers, "peers"}, {FeaturePause, "pause"}, {FeatureLatency, "latency"}, {FeatureHandBack, "handback"},
	{FeatureClaim, "claim"}, {FeatureOutcomes, "outcomes"}, {FeatureListeners, "listeners"},
}

// String names the features, "none" for none: an older worker shows as
// "none" in the supervisor's log.
func (f Features) String() string {
	if f == 0 {
		return "none"
	}
	var names []string
	for _, n := range featureNames {
		if f&n.f != 0 {
			names = append(names, n.name)
		}
	}
	if rest := f &^ Supported; rest != 0 {
		names = append(names, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(names, ",")
}

// Errors returned by Decode and the channel methods.
var (
	ErrShort      = errors.New("ipc: frame shorter than its header")
	ErrVersion    = errors.New("ipc: unknown frame version")
	ErrType       = errors.New("ipc: unknown frame type")
	ErrLength     = errors.New("ipc: frame length does not match its header")
	ErrPayload    = errors.New("ipc: payload size wrong for frame type")
	ErrTooLarge   = errors.New("ipc: frame too large")
	ErrTruncated  = errors.New("ipc: frame or its control message truncated")
	ErrFDs        = errors.New("ipc: descriptors do not match the frame")
	ErrWouldBlock = errors.New("ipc: peer queue full")

	// ErrUnexpectedFDs: descriptors came with a frame that cannot carry
	// them (any type but conns), or to the supervisor's end of a channel,
	// which never receives any. They are closed; the peer broke the
	// protocol.
	ErrUnexpectedFDs = errors.New("ipc: descriptors on a frame that cannot carry them")
	// ErrFDsTruncated: the kernel installed fewer of a conns frame's
	// descriptors than were sent (MSG_CTRUNC), because the receiver ran out
	// of descriptors; it closed the rest. Unlike every other error, Recv
	// and TryRecv return it with the frame, whose Count says how many were
	// sent, and with the descriptors that did arrive, which the caller
	// owns.
	ErrFDsTruncated = errors.New("ipc: descriptors truncated by the kernel (receiver out of descriptors)")
)

// Frame is one decoded message. Payload aliases the buffer passed to Decode.
type Frame struct {
	Type    Type
	Payload []byte
}

// Decode parses one frame. It never panics and never allocates.
func Decode(b []byte) (Frame, error) {
	if len(b) < HeaderSize {
		return Frame{}, ErrShort
	}
	if len(b) > MaxFrame {
		return Frame{}, ErrTooLarge
	}
	if b[0] != Version {
		return Frame{}, ErrVersion
	}
	t := Type(b[1])
	if t == 0 || t >= typeEnd {
		return Frame{}, ErrType
	}
	n := int(binary.LittleEndian.Uint16(b[2:4]))
	if n != len(b)-HeaderSize {
		return Frame{}, ErrLength
	}
	if want := payloadSize[t]; want >= 0 && n != want {
		return Frame{}, ErrPayload
	}
	f := Frame{Type: t, Payload: b[HeaderSize:]}
	switch t {
	case TypeReady:
		if n != 0 && n != 4 {
			return Frame{}, ErrPayload
		}
	case TypeHeartbeat:
		if n != heartbeatSize && n != heartbeatSize+latencySize && n != heartbeatSize+latencySize+outcomesSize {
			return Frame{}, ErrPayload
		}
	case TypeClaim:
		if n == 0 || n > MaxClaim {
			return Frame{}, ErrPayload
		}
	case TypeConns:
		if n == 0 || f.Payload[0] == 0 || f.Payload[0] > MaxFDs {
			return Frame{}, ErrPayload
		}
		if peers := n - 1; peers != 0 {
			size := peers / int(f.Payload[0])
			if size != PeerSize && size != RecordSize || peers != int(f.Payload[0])*size {
				return Frame{}, ErrPayload
			}
			for i := 1; i < n; i += size {
				if fam := f.Payload[i]; fam != peerUnknown && fam != peer4 && fam != peer6 {
					return Frame{}, ErrPayload
				}
			}
		}
	}
	return f, nil
}

// appendHeader appends the header of a frame of type t whose payload is n
// bytes (n ≤ MaxFrame-HeaderSize).
func appendHeader(dst []byte, t Type, n int) []byte {
	return binary.LittleEndian.AppendUint16(append(dst, Version, byte(t)), uint16(n))
}

// AppendFrame appends a frame of type t with payload p to dst.
func AppendFrame(dst []byte, t Type, p []byte) ([]byte, error) {
	if len(p) > MaxFrame-HeaderSize {
		return dst, ErrTooLarge
	}
	return append(appendHeader(dst, t, len(p)), p...), nil
}

// AppendUint32 appends a frame whose payload is one uint32 (load, drain).
func AppendUint32(dst []byte, t Type, v uint32) []byte {
	return binary.LittleEndian.AppendUint32(appendHeader(dst, t, 4), v)
}

// Uint32 reads the payload of a load or drain frame.
func (f Frame) Uint32() uint32 { return binary.LittleEndian.Uint32(f.Payload) }

// AppendConns appends the header frame of a handoff carrying n descriptors.
func AppendConns(dst []byte, n int) []byte {
	return append(appendHeader(dst, TypeConns, 1), byte(n))
}

// connsFrames holds the conns frame for every count, so the handoff path
// sends a frame without building (and allocating) one.
var connsFrames = func() (f [MaxFDs + 1][]byte) {
	for n := 1; n <= MaxFDs; n++ {
		f[n] = AppendConns(nil, n)
	}
	return f
}()

// ConnsFrame returns the conns frame announcing n descriptors, 1..MaxFDs.
// The slice is shared: do not modify it.
func ConnsFrame(n int) []byte { return connsFrames[n] }

// Count is the number of descriptors a conns frame announces.
func (f Frame) Count() int { return int(f.Payload[0]) }

// Peers returns the peer records of a conns frame, RecordSize bytes
// each, or nothing when it carries none. They alias the frame's buffer.
func (f Frame) Peers() []byte { return f.Payload[1:] }

// RecordSize is the size of each of Peers' records: PeerSize, or
// RecordSize with the listener's index; 0 when the frame carries none.
func (f Frame) RecordSize() int { return (len(f.Payload) - 1) / f.Count() }

// AppendReady appends a ready frame announcing the features the worker uses
// (none: an empty payload, which every supervisor accepts).
func AppendReady(dst []byte, uses Features) []byte {
	if uses == 0 {
		return appendHeader(dst, TypeReady, 0)
	}
	return AppendUint32(dst, TypeReady, uint32(uses))
}

// Features returns what a ready frame announces.
func (f Frame) Features() Features {
	if len(f.Payload) < 4 {
		return 0
	}
	return Features(f.Uint32())
}

// AppendConnsPeers appends the start of a conns frame for n descriptors,
// 1..MaxFDs, that carries their peers: the caller appends the n records.
func AppendConnsPeers(dst []byte, n int) []byte {
	return AppendConnsRecords(dst, n, PeerSize)
}

// AppendConnsRecords is AppendConnsPeers for records of size bytes each:
// PeerSize, or RecordSize for a worker that uses FeatureListeners.
func AppendConnsRecords(dst []byte, n, size int) []byte {
	return append(appendHeader(dst, TypeConns, 1+n*size), byte(n))
}

// MaxConnsFrame is the size of the largest conns frame.
const MaxConnsFrame = HeaderSize + 1 + MaxFDs*RecordSize

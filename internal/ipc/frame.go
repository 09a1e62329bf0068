package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	// TypeReady (worker → supervisor): the worker serves. Empty payload.
	TypeReady Type = 1 + iota
	// TypeHeartbeat (worker → supervisor): a [Heartbeat], sent every second.
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
	// file, so the worker need not set it). Payload: their count, uint8.
	TypeConns
	// TypeMessage (either way): opaque bytes for the application.
	TypeMessage
	typeEnd
)

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
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// payloadSize is the exact payload size of each fixed-size type; -1 means
// variable.
var payloadSize = [typeEnd]int{
	TypeReady:     0,
	TypeHeartbeat: heartbeatSize,
	TypeLoad:      4,
	TypeDrain:     4,
	TypeConns:     1,
	TypeMessage:   -1,
}

// Errors returned by Decode and the channel methods.
var (
	ErrShort      = errors.New("ipc: frame shorter than its header")
	ErrVersion    = errors.New("ipc: unknown frame version")
	ErrType       = errors.New("ipc: unknown frame type")
	ErrLength     = errors.New("ipc: frame length does not match its header")
	ErrPayload    = errors.New("ipc: payload size wrong for frame type")
	ErrTooLarge   = errors.New("ipc: frame too large")
	ErrTruncated  = errors.New("ipc: frame or its descriptors truncated by the kernel")
	ErrFDs        = errors.New("ipc: descriptors do not match the frame")
	ErrWouldBlock = errors.New("ipc: peer queue full")
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
	if t == TypeConns && (f.Payload[0] == 0 || f.Payload[0] > MaxFDs) {
		return Frame{}, ErrPayload
	}
	return f, nil
}

// AppendFrame appends a frame of type t with payload p to dst.
func AppendFrame(dst []byte, t Type, p []byte) ([]byte, error) {
	if len(p) > MaxFrame-HeaderSize {
		return dst, ErrTooLarge
	}
	dst = append(dst, Version, byte(t), 0, 0)
	binary.LittleEndian.PutUint16(dst[len(dst)-2:], uint16(len(p)))
	return append(dst, p...), nil
}

// AppendUint32 appends a frame whose payload is one uint32 (load, drain).
func AppendUint32(dst []byte, t Type, v uint32) []byte {
	dst = append(dst, Version, byte(t), 4, 0)
	return binary.LittleEndian.AppendUint32(dst, v)
}

// Uint32 reads the payload of a load or drain frame.
func (f Frame) Uint32() uint32 { return binary.LittleEndian.Uint32(f.Payload) }

// AppendConns appends the header frame of a handoff carrying n descriptors.
func AppendConns(dst []byte, n int) []byte {
	return append(dst, Version, byte(TypeConns), 1, 0, byte(n))
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

// Heartbeat is what a worker reports every second.
type Heartbeat struct {
	Conns      uint64 // open connections
	Requests   uint64 // requests served since start
	RSS        uint64 // resident set size, bytes
	Goroutines uint32
	Healthy    bool // the worker's in-process health check passed
}

const heartbeatSize = 8 + 8 + 8 + 4 + 1

// AppendHeartbeat appends a heartbeat frame to dst.
func AppendHeartbeat(dst []byte, h Heartbeat) []byte {
	dst = append(dst, Version, byte(TypeHeartbeat), heartbeatSize, 0)
	dst = binary.LittleEndian.AppendUint64(dst, h.Conns)
	dst = binary.LittleEndian.AppendUint64(dst, h.Requests)
	dst = binary.LittleEndian.AppendUint64(dst, h.RSS)
	dst = binary.LittleEndian.AppendUint32(dst, h.Goroutines)
	var ok byte
	if h.Healthy {
		ok = 1
	}
	return append(dst, ok)
}

// Heartbeat reads the payload of a heartbeat frame.
func (f Frame) Heartbeat() Heartbeat {
	p := f.Payload
	return Heartbeat{
		Conns:      binary.LittleEndian.Uint64(p[0:]),
		Requests:   binary.LittleEndian.Uint64(p[8:]),
		RSS:        binary.LittleEndian.Uint64(p[16:]),
		Goroutines: binary.LittleEndian.Uint32(p[24:]),
		Healthy:    p[28] == 1,
	}
}

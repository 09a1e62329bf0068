package ipc

import (
	"encoding/binary"
	"time"

	"github.com/prefork/prefork/internal/latency"
)

// Heartbeat is what a worker reports every second.
type Heartbeat struct {
	Conns      uint64 // open connections
	Requests   uint64 // requests served since start
	RSS        uint64 // resident set size, bytes
	Goroutines uint32
	Healthy    bool // the worker's in-process health check passed
	// Latency of the requests served since start; nil from a worker that
	// does not record it or was not offered FeatureLatency (an older
	// build sends the 29-byte heartbeat only).
	Latency *latency.Counts
	// Outcomes of the same requests, by class; nil unless Latency is set
	// and the worker uses FeatureOutcomes.
	Outcomes *latency.Outcomes
}

const (
	heartbeatSize = 8 + 8 + 8 + 4 + 1
	// latencySize: the histogram's sum in nanoseconds, then its buckets,
	// uint64 each.
	latencySize = 8 + 8*latency.Buckets
	// outcomesSize: after the histogram, a uint64 per latency.Class.
	outcomesSize = 8 * int(latency.NumClasses)
)

// MaxHeartbeatFrame is the size of the largest heartbeat frame.
const MaxHeartbeatFrame = HeaderSize + heartbeatSize + latencySize + outcomesSize

// AppendHeartbeat appends a heartbeat frame to dst, with the latency
// histogram if h has one, and then the outcomes if it has those too.
func AppendHeartbeat(dst []byte, h Heartbeat) []byte {
	n := heartbeatSize
	if h.Latency != nil {
		n += latencySize
		if h.Outcomes != nil {
			n += outcomesSize
		}
	}
	dst = appendHeader(dst, TypeHeartbeat, n)
	dst = binary.LittleEndian.AppendUint64(dst, h.Conns)
	dst = binary.LittleEndian.AppendUint64(dst, h.Requests)
	dst = binary.LittleEndian.AppendUint64(dst, h.RSS)
	dst = binary.LittleEndian.AppendUint32(dst, h.Goroutines)
	var ok byte
	if h.Healthy {
		ok = 1
	}
	dst = append(dst, ok)
	if l := h.Latency; l != nil {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(l.Sum))
		for _, v := range l.Buckets {
			dst = binary.LittleEndian.AppendUint64(dst, v)
		}
		if o := h.Outcomes; o != nil {
			for _, v := range o {
				dst = binary.LittleEndian.AppendUint64(dst, v)
			}
		}
	}
	return dst
}

// Heartbeat reads the payload of a heartbeat frame. Its Latency is a new
// allocation, when the frame has one.
func (f Frame) Heartbeat() Heartbeat {
	p := f.Payload
	h := Heartbeat{
		Conns:      binary.LittleEndian.Uint64(p[0:]),
		Requests:   binary.LittleEndian.Uint64(p[8:]),
		RSS:        binary.LittleEndian.Uint64(p[16:]),
		Goroutines: binary.LittleEndian.Uint32(p[24:]),
		Healthy:    p[28] == 1,
	}
	if p = p[heartbeatSize:]; len(p) >= latencySize {
		l := &latency.Counts{Sum: time.Duration(binary.LittleEndian.Uint64(p))}
		for i := range l.Buckets {
			l.Buckets[i] = binary.LittleEndian.Uint64(p[8+8*i:])
		}
		h.Latency = l
	}
	if p = p[min(len(p), latencySize):]; len(p) == outcomesSize {
		o := new(latency.Outcomes)
		for i := range o {
			o[i] = binary.LittleEndian.Uint64(p[8*i:])
		}
		h.Outcomes = o
	}
	return h
}

package nodeipc

import (
	"bytes"
	"strconv"
)

// The lines that come and go once per connection in rr mode, read and
// written without encoding/json: a newconn, the worker's NODE_HANDLE_ACK
// and its answer {cmd:'NODE_CLUSTER', ack, accepted, seq}. Each is matched
// byte for byte as Node writes it (JSON.stringify, keys in the order
// sendHelper and child.js build them); any other spelling takes the
// general path.

var (
	ackBody         = ackLine[:len(ackLine)-1]
	clusterAckHead  = []byte(`{"cmd":"NODE_CLUSTER","ack":`)
	clusterAccepted = []byte(`,"accepted":`)
	clusterSeq      = []byte(`,"seq":`)
)

// clusterAck parses a worker's answer to a newconn, written by Node as
//
//	{"cmd":"NODE_CLUSTER","ack":5,"accepted":true,"seq":3}
//
// ok is false for anything else, valid JSON or not.
func clusterAck(line []byte) (ack int64, accepted, ok bool) {
	rest, found := bytes.CutPrefix(line, clusterAckHead)
	if !found {
		return 0, false, false
	}
	ack, rest, ok = digits(rest)
	if !ok {
		return 0, false, false
	}
	if rest, ok = bytes.CutPrefix(rest, clusterAccepted); !ok {
		return 0, false, false
	}
	switch {
	case bytes.HasPrefix(rest, []byte("true")):
		accepted, rest = true, rest[4:]
	case bytes.HasPrefix(rest, []byte("false")):
		rest = rest[5:]
	default:
		return 0, false, false
	}
	if rest, ok = bytes.CutPrefix(rest, clusterSeq); !ok {
		return 0, false, false
	}
	if _, rest, ok = digits(rest); !ok || string(rest) != "}" {
		return 0, false, false
	}
	return ack, accepted, true
}

// digits reads a JSON non-negative integer below 2^53 at the start of b.
func digits(b []byte) (int64, []byte, bool) {
	i := 0
	for i < len(b) && i < 16 && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || (b[0] == '0' && i > 1) || (i < len(b) && b[i] >= '0' && b[i] <= '9') {
		return 0, b, false
	}
	v, err := strconv.ParseInt(string(b[:i]), 10, 64)
	return v, b[i:], err == nil
}

// newconnLine is the line that hands a connection to a worker, as Node's
// primary writes it: the newconn message of round_robin_handle.js, stamped
// by sendHelper, in the NODE_HANDLE wrapper of a net.Native handle. keyJSON
// is the key already encoded as a JSON string.
func newconnLine(keyJSON []byte, seq int64) []byte {
	b := make([]byte, 0, 112+len(keyJSON))
	b = append(b, `{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","act":"newconn","key":`...)
	b = append(b, keyJSON...)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, "}}\n"...)
}

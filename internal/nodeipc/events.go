package nodeipc

import (
	"encoding/json"
	"strconv"
)

// Event is what a Worker reports, in the order the worker sent it. Value is
// one of Online, QueryServer, Listening, Message (an application message:
// process.send in the worker; the owner owns its FD), Accepted, Refused,
// ServerClosed, ExitedAfterDisconnect, Malformed, and last Disconnected.
type Event struct {
	Worker *Worker
	Value  any
}

// Online: the worker's cluster module is set up (cluster 'online').
type Online struct{}

// QueryServer is a worker's server asking for its listening handle: the
// arguments of its listen call. The owner answers with ReplyRoundRobin,
// ReplyShared or ReplyError; until then, that listen waits.
type QueryServer struct {
	Seq         int64  // the worker's seq, which the reply acknowledges
	Key         string // Node's handle key: address:port:addressType:fd:index
	Address     string // "" when the app gave none (null)
	Port        int    // negative for a unix socket path
	AddressType string // "4", "6", "-1" (path), "udp4", "udp6"
	FD          int    // listen({fd}); -1 when not given
	Index       int    // counts the app's servers with the same arguments
	Backlog     int    // 0 when not given
	// Data is what the server shares through the primary (a TLS server's
	// ticket keys); the reply carries it back. Node's primary keeps the
	// first worker's Data for a key and gives it to every worker; an owner
	// that wants that sets Data before replying.
	Data json.RawMessage
	// Raw is the whole message, for the fields not decoded here.
	Raw json.RawMessage
}

// Listening: a worker's server listens (cluster 'listening').
type Listening struct {
	Address     string
	Port        int
	AddressType string
	FD          int // -1 when not given
}

// Accepted: the worker took a connection NewConn handed it; the Worker has
// closed its copy.
type Accepted struct{ Key string }

// Refused gives back a connection NewConn handed: the worker did not take it
// (that server is closed, or at maxConnections), could not receive it (it
// answered every retransmission with NODE_HANDLE_NACK), or, Gone, went
// away before it answered. The owner owns FD again: it hands it to another worker or
// closes it.
type Refused struct {
	Key  string
	FD   int
	Gone bool // the channel ended before the worker answered
}

// ServerClosed: the worker closed the server of Key; it takes no more
// connections for it.
type ServerClosed struct{ Key string }

// ExitedAfterDisconnect: the worker disconnects on its own
// (cluster.worker.disconnect or destroy), so its exit is intended. The
// Worker has acknowledged it.
type ExitedAfterDisconnect struct{}

// Malformed reports a line that was not a message (it wraps
// ErrBadMessage); the Worker reads on.
type Malformed struct{ Err error }

// Disconnected is the last event: the channel ended. Err is nil when the
// worker closed it (io.EOF), ErrClosed after Close.
type Disconnected struct{ Err error }

// jsString renders a JSON value as JavaScript's template literals would
// (`${v}`), for Node's handle key: a string as is, null as "null", absent
// as "undefined", a number as written.
func jsString(raw json.RawMessage) string {
	switch {
	case len(raw) == 0:
		return "undefined"
	case raw[0] == '"':
		return jsonString(raw)
	}
	return string(raw)
}

// jsInt decodes a JSON number as an int; def when absent or not a number.
func jsInt(raw json.RawMessage, def int) int {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != float64(int(f)) {
		return def
	}
	return int(f)
}

// Package control owns the supervisor's control socket: the wire protocol,
// the server, the event broadcaster and `supervisor ctl`, its client.
//
// The socket is a unix stream socket, mode 0600, at the -control path or
// [DefaultPath] of the listening address, in the user's private
// [DefaultDir] (0700; a squatted one is refused). Its protocol is one JSON object
// per line: the client sends one [Request], the server answers one
// [Response] and closes, except for "events", after which the server writes
// one [Event] per line, beginning with {"event":"subscribed"}, until the
// client closes:
//
//	$ echo '{"cmd":"scale","n":4}' | socat - UNIX-CONNECT:/tmp/prefork-1000/3000.sock
//	{"ok":true,"message":"scaled from 2 to 4 workers in 310ms"}
//	$ echo '{"cmd":"events"}' | socat -t 1000000 - UNIX-CONNECT:/tmp/prefork-1000/3000.sock
//	{"event":"subscribed","time":"2025-05-01T10:00:00.123456789+02:00"}
//	{"event":"exit","time":"2025-05-01T10:00:03.2+02:00","pid":4245,"slot":1,...}
//
// Only processes with the server's uid are served (SO_PEERCRED); see
// [Server]. The client, in turn, talks only to a server running as its own
// uid or as root, and ctl escapes the control characters of what it
// prints. The supervisor implements [Handler] and publishes to a
// [Broadcaster]:
//
//	srv, err := control.Listen(control.DefaultPath(":3000"), log)
//	if err != nil { ... }            // control.ErrInUse: another supervisor runs there
//	go func() { served <- srv.Serve(handler, &bus) }() // nil after srv.Close(); log anything else
//	bus.Publish(control.Event{Kind: control.EventFork, Slot: 1, PID: 4243, Generation: 1, Cause: control.CauseStart})
//
// Reload and scale are answered once they are over; a client that hangs up
// first (closes, not just shuts down its write side) cancels the request's
// context.
//
// # Where to read
//
//	protocol.go      Request, Response, Status, Handler: the wire
//	canary.go        a canary reload: its options, states, verdicts, CanaryStatus
//	vocab.go         commands, worker states, event kinds, causes, steps
//	event.go         Event and its wire form (Fields)
//	server.go        Server: limits, the accept loop, admission, Close
//	listen.go        Listen: the socket file made, replaced if stale, removed
//	conn.go          one connection: request, Handler, answer, event stream
//	peer_linux.go    SO_PEERCRED and a peer's hang-up
//	inherit.go       the socket and a client's connection across an upgrade
//	broadcast.go     Broadcaster: events fanned out, never blocking
//	path.go          DefaultDir, DefaultPath and the private directory
//	client.go        Call and Events, the client side
//	ctl.go           `supervisor ctl`
//	print.go         WriteStatus: ctl status as a table
//	sticky.go        StickyStatus, and its lines in ctl status
//
// Linux only.
package control

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS

// Package ipc is the wire between the supervisor and one worker.
//
// Each worker gets two private channels, both socketpair(AF_UNIX,
// SOCK_SEQPACKET) ends inherited as file descriptors, so no filesystem path
// exists and no other process can connect:
//
//   - the control channel (fd 3) carries typed frames both ways: ready,
//     heartbeat, load, pause, resume and messages from the worker; drain and
//     messages from the supervisor. EOF on it tells the worker that the
//     supervisor is gone.
//   - in rr mode, the handoff channel (fd 4) carries accepted connections
//     from the supervisor to the worker as SCM_RIGHTS, several per frame when
//     they arrive in a burst. In shared and reuseport mode fd 4 is a listening
//     socket instead.
//
// SEQPACKET keeps message boundaries, so one frame is one packet. Every frame
// starts with a 4-byte header: version, type, and the payload length
// (little-endian uint16). [Decode] checks all of it and returns an error, never
// a panic, for any malformed, truncated, oversized or unknown-version frame.
//
// Optional parts of the protocol are [Features]: the supervisor offers what
// it understands in an environment variable, the worker answers in its ready
// frame, and neither sends the other what it did not agree to, so a
// supervisor and a worker built from different releases still work together.
// [FeaturePeers] carries each handed connection's peer address in the conns
// frame (accept4 yields it for free), which spares the worker a getpeername
// per connection. [FeaturePause] lets a worker close to its descriptor limit
// send [TypePause], and [TypeResume] once it has room again; the supervisor
// hands a paused worker nothing. [FeatureHandBack] lets a draining rr
// worker send idle keep-alive connections back on its handoff channel, a
// conns frame the other way, for the supervisor to hand to another worker.
// [FeatureOutcomes] adds the requests counted by status class and handler
// panics to the heartbeat's latency histogram (heartbeat.go), for a canary
// reload's error-rate gate.
//
// Descriptors travel only from the supervisor to the worker, and only with
// conns frames. A receiver closes any others at once ([ErrUnexpectedFDs]), so
// a broken peer cannot make it hold descriptors. A worker out of descriptors
// gets fewer than were sent, and the kernel closes the rest: the receiver
// learns how many were lost from [ErrFDsTruncated] and the frame's count.
//
// The supervisor keeps its own duplicate of the worker's end of the handoff
// channel. When a worker dies, connections that were queued for it but never
// received are still in that socket's queue; the supervisor reads them back
// and hands them to another worker instead of letting the kernel reset them.
//
// The heartbeat is in heartbeat.go; the environment contract in env.go.
//
// Linux only.
package ipc

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS

// Package handoff moves accepted connections to workers: the supervisor's
// rr path, and reuseport's while a slot's socket has no worker or is
// retired. It owns the targets (a worker as the handoff sees it), the
// queue of connections no worker can take yet, the dispatch where a policy
// picks the target, and the taking back of what a dead or stalled worker
// did not take. Its locks are its own: Handoff.mu (the queue), then
// Target.mu (one worker's sends and accounting), then whatever a transport
// locks; nothing outside the package takes them.
//
// A Transport is how a connection reaches one worker and comes back from
// it: Frames, prefork's conns frames on a SOCK_SEQPACKET channel, closed on
// our side once sent and read back through a kept duplicate of the
// worker's end; or Node, Node.js's newconn message, held until the worker
// answers. The handoff never asks which one it holds. A connection a
// worker hands back comes through the same transport, the other way
// (takeBack, Node.Answered), and is dispatched again.
//
//	h, err := handoff.New("least-conn", log, 1024, 10*time.Second)
//	t := handoff.NewTarget(slot, handoff.NewFrames(ch, keep, log))
//	h.Route(t)                  // ready: it gets connections
//	loop, err := h.Accept(ln)   // accept, pick, send, close our copy
//	...
//	h.Recover(t)                // exited: what it did not take goes on
//
// # Where to read
//
//	handoff.go            Handoff: routing, dispatch, send, failures, pause
//	queue.go              the pending queue: bounds, expiry, flush, upgrade
//	accept.go             an accept loop on a listening socket
//	retiring.go           emptying a retired listening socket
//	takeback.go           stalled workers (Check), exits (Recover)
//	handback.go           connections a draining worker hands back (Receive)
//	rebalance.go          where rebalancing sends them (Want)
//	target.go             Target: counts, availability, the window
//	transport.go          the Transport seam and what a send carries
//	transport_frames.go   prefork's frame channel
//	sendlog.go            what a frame channel's worker has taken (SIOCINQ)
//	transport_node.go     Node's IPC: newconn, answered
//	save.go               a target's counts across an upgrade
//
// Linux only.
package handoff

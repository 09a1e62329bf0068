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
// # Sticky routing
//
// With a sticky policy (Stick, before the first accept; -sticky and
// -proxy-protocol) dispatch asks it first. For each connection it reads
// what it can without waiting (first: the PROXY header, consumed; the
// key, peeked with MSG_PEEK and never consumed, at most sticky.MaxPeek
// bytes); what must wait goes to the peeker, one goroutine on an
// edge-triggered epoll set, bounded in count (maxPeeking) and time
// (-sticky-wait, -proxy-wait), so a silent client delays nobody. The key
// picks a slot: a claimed key (sticky.Table) its claimer's, any other by
// rendezvous hashing over the live slots (routed once, not retired). A
// slot without a ready worker (restarting, full, paused) holds its keyed
// connections for -sticky-hold (Flush releases them), then they go to the
// next slot by hash. No key, or no slot: -balance picks.
//
// How a new kind of key plugs in (socketio is one):
//   - internal/sticky: a file whose init calls sticky.RegisterKey("socketio",
//     parse). Its Key has Peek (the head is peeked), Find (the engine.io
//     sid query parameter; more=true while the request line is not
//     complete), ClaimedOnly (a sid nobody claimed goes by -balance, not
//     by hash) and AwaitClaim (an unknown sid waits that long for its
//     claim: the worker reports a new sid just after answering the
//     handshake). -sticky socketio is then valid everywhere (settings
//     checks with sticky.ParseKey).
//   - claims: Handoff.Claim(key, slot) is safe for concurrent use and
//     wakes the connections awaiting that key. A prefork worker's
//     cluster.Claim arrives as a claim frame (the supervisor's preforkLink calls
//     it on the reader goroutine); a Node worker's
//     {type: 'sticky:connection', data: sid} message is the same call
//     from its nodeLink, with p.slot.id.
//   - the Node transport carries sticky connections as it carries any:
//     the policy only picks the target. Under -sticky socketio a worker
//     that called setupWorker never listens: ListenSticky, once it is
//     online, has its connections go as setupWorker's
//     {type: 'sticky:connection'} message, taken when the worker
//     acknowledges the handle, in a window of maxStickyUntaken.
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
//	sticky.go             the sticky policy: slots, pick by key, Claim, RetireSlot
//	sticky_hold.go        keyed connections held for a slot (restarting, full) or a claim; StickyStats
//	peek.go               the peeker: PROXY headers and keys off the accept loop
//
// Linux only.
package handoff

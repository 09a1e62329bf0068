package primary

import (
	ctl "github.com/prefork/prefork/internal/control"
)

// EventKind names an Event, with the name of Node's cluster event.
type EventKind string

// The events of a worker's life, as Node's cluster module emits them.
const (
	// EventFork: the worker process started (Reason: start, crash,
	// reload, scale, ...).
	EventFork EventKind = "fork"
	// EventOnline: the worker runs this program. exec has succeeded
	// when the process starts, so it follows EventFork at once.
	EventOnline EventKind = "online"
	// EventListening: the worker serves (its first Accept; for a node
	// worker, its server's 'listening'). Address is the primary's.
	EventListening EventKind = "listening"
	// EventDisconnect: the worker was asked to drain (Reason), or its
	// channel closed because it exited: it takes no new connections.
	EventDisconnect EventKind = "disconnect"
	// EventExit: the worker exited (Reason; Code or Signal). Unless it
	// was asked to (Worker.ExitedAfterDisconnect), its slot gets a new
	// worker, with a backoff if it keeps dying young.
	EventExit EventKind = "exit"
	// EventMessage: the worker sent Message with cluster.Send (a node
	// worker: process.send, as JSON).
	EventMessage EventKind = "message"
)

// Event is something that happened to a worker.
type Event struct {
	Kind    EventKind
	Worker  *Worker
	Message []byte // EventMessage
	Address string // EventListening: HOST:PORT
	// Reason: EventFork why it started; EventDisconnect and EventExit
	// why it left: "crash" for an exit nobody asked for, else
	// "stop", "reload", "scale", "disconnect", "hang", "recycle", ...
	Reason string
	Code   int    // EventExit: the exit code, when Signal is ""
	Signal string // EventExit: the signal that killed it, as Node names it: "SIGKILL"
}

// translate turns one engine event into the Events it means.
func (p *Primary) translate(e ctl.Event) {
	if e.Kind == ctl.EventDropped {
		p.dropped.Add(uint64(e.Count))
		p.seenAll() // lost messages hold no place in the window
		return
	}
	if e.PID == 0 || e.Slot == 0 {
		return // not a worker's event
	}
	w := p.track(e.PID, e.Slot, e.Generation)
	switch e.Kind {
	case ctl.EventFork:
		p.emit(Event{Kind: EventFork, Worker: w, Reason: string(e.Cause)})
		p.emit(Event{Kind: EventOnline, Worker: w})
	case ctl.EventReady:
		w.setState(StateReady)
		p.emit(Event{Kind: EventListening, Worker: w, Address: p.addr})
	case ctl.EventDrain:
		w.leaving(string(e.Reason))
		w.setState(StateDraining)
		if w.disconnected.CompareAndSwap(false, true) {
			p.emit(Event{Kind: EventDisconnect, Worker: w, Reason: string(e.Reason)})
		}
	case ctl.EventExit:
		reason := string(e.Reason)
		if w.disconnected.CompareAndSwap(false, true) {
			p.emit(Event{Kind: EventDisconnect, Worker: w, Reason: reason})
		}
		w.leaving(reason)
		w.setState(StateExited)
		w.dead.Store(true)
		p.forget(e.PID)
		p.emit(Event{Kind: EventExit, Worker: w, Reason: reason, Code: e.Code, Signal: e.Signal})
	case ctl.EventMessage:
		p.deliver(Event{Kind: EventMessage, Worker: w, Message: []byte(e.Msg)}, e.Seq)
	}
}

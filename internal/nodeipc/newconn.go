package nodeipc

import (
	"encoding/json"
	"maps"
	"slices"
)

// The connections a Worker hands in rr mode: newconn, the answer, taking
// them back.

// OnAccepted has f told, on the Worker's reading goroutine, of each
// connection the worker accepted, in place of an Accepted event: one
// message per connection, which need not wait for the owner's turn. f
// must not block.
func (w *Worker) OnAccepted(f func(key string)) { w.accepted.Store(&f) }

// delivered marks newconn seq's descriptor as received by the worker. A
// sticky connection (StickyConn) has no other answer: it is taken.
func (w *Worker) delivered(seq int64) {
	w.mu.Lock()
	p, ok := w.pending[seq]
	if ok {
		p.delivered = true
		w.pending[seq] = p
	}
	w.mu.Unlock()
	if ok && p.sticky {
		w.settle(seq, true)
	}
}

// undelivered gives back the connection of newconn seq, which the worker
// never received: it refused the descriptor every time it was sent
// (NODE_HANDLE_NACK: out of descriptors itself), and so never answers it.
func (w *Worker) undelivered(seq int64) {
	w.mu.Lock()
	p, ok := w.pending[seq]
	delete(w.pending, seq)
	w.mu.Unlock()
	if ok {
		w.emit(Refused{Key: p.key, FD: p.fd})
	}
}

// settle settles the connection newconn seq handed, which the worker
// accepted or not; false when the ack answers nothing pending.
func (w *Worker) settle(seq int64, accepted bool) bool {
	w.mu.Lock()
	p, ok := w.pending[seq]
	if ok && !p.delivered {
		// An answer before the handle's NODE_HANDLE_ACK: Node sends
		// that first, so this is no Node worker's answer. The channel
		// still holds fd (lent): ignore it.
		w.mu.Unlock()
		return true
	}
	delete(w.pending, seq)
	w.mu.Unlock()
	if !ok {
		return false
	}
	if accepted {
		rawClose(p.fd) // the worker has its own copy now
		if f := w.accepted.Load(); f != nil {
			(*f)(p.key)
			return true
		}
		w.emit(Accepted{Key: p.key})
	} else {
		w.emit(Refused{Key: p.key, FD: p.fd})
	}
	return true
}

// stickyLine hands a connection to a worker that called @socket.io/sticky's
// setupWorker: the message its primary (setupMaster) sends, with the
// socket as a net.Socket handle, which the worker's process 'message'
// gets as a net.Socket. setupMaster sends the first chunk it read as
// data; the supervisor only peeked at it, so the worker reads it from the
// socket itself, and data is empty (a Buffer would not survive JSON).
var stickyLine = []byte(`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"type":"sticky:connection","data":""}}` + "\n")

// StickyConn hands the worker a connection fd as @socket.io/sticky's
// primary does ({type: 'sticky:connection', data}, see stickyLine). Its
// only answer is the channel's NODE_HANDLE_ACK: then it is Accepted (fd
// closed), as NewConn's on the worker's answer; fd comes back Refused if
// the worker could not receive it or went away first. On error the
// caller keeps fd.
func (w *Worker) StickyConn(fd int) error {
	return w.hand(conn{fd: fd, sticky: true}, func(int64) []byte { return stickyLine })
}

// hand registers c as pending under the next sequence number and sends
// the line line(seq) with c's descriptor. If the send fails while c is
// still pending, c is withdrawn and the error returned: the caller keeps
// the descriptor.
func (w *Worker) hand(c conn, line func(seq int64) []byte) error {
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		return ErrClosed
	}
	seq := w.seq
	w.seq++
	w.pending[seq] = c
	w.mu.Unlock()
	err := w.ch.sendLine(line(seq), c.fd, seq, true)
	if err == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[seq]; ok {
		delete(w.pending, seq)
		return err
	}
	return nil // the channel ended meanwhile, and end reported it Refused
}

// NewConn hands the worker a connection fd for its round-robin server key
// (QueryServer.Key), with the message round_robin_handle.js sends:
// {act:'newconn', key}. On success the Worker owns fd until the worker
// answers: Accepted (fd closed) or Refused (fd given back). On error the
// caller keeps fd.
func (w *Worker) NewConn(key string, fd int) error {
	w.nmu.Lock()
	defer w.nmu.Unlock()
	if key != w.key {
		k, err := json.Marshal(key)
		if err != nil {
			return err // not for a string
		}
		w.key, w.keyJSON = key, k
	}
	return w.hand(conn{key: key, fd: fd}, func(seq int64) []byte { return newconnLine(w.keyJSON, seq) })
}

// Reclaim takes back the connections handed with NewConn that the worker
// has not answered, and returns them: the caller owns them again. Call it
// only once the worker can answer no more (its process has exited): a
// connection it received but did not answer, it had not started to read
// (child.js answers before it reads). A later answer to one of them is
// ignored, and the channel's end reports nothing for them.
func (w *Worker) Reclaim() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The channel borrowed their descriptors: it must not write one
	// once the caller has it again.
	w.ch.withdraw(func(seq int64) bool { _, ok := w.pending[seq]; return ok })
	w.ch.forgetInflight()
	fds := make([]int, 0, len(w.pending))
	for _, seq := range slices.Sorted(maps.Keys(w.pending)) { // in the order handed
		fds = append(fds, w.pending[seq].fd)
		delete(w.pending, seq)
	}
	return fds
}

// Withdraw takes back the connections handed with NewConn that are still
// in the channel's send queue, and returns them in the order handed: the
// caller owns them again. The channel writes one handle at a time and the
// next only once the worker has acknowledged it (NODE_HANDLE_ACK), so
// while the worker does not read (a stopped process, a blocked event
// loop) all but the first wait there, unseen by it. Unlike Reclaim,
// Withdraw is safe while the worker runs: it never gets what was withdrawn.
func (w *Worker) Withdraw() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	seqs := w.ch.withdraw(func(seq int64) bool { _, ok := w.pending[seq]; return ok })
	fds := make([]int, 0, len(seqs))
	for _, seq := range seqs {
		fds = append(fds, w.pending[seq].fd)
		delete(w.pending, seq)
	}
	return fds
}

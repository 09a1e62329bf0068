package nodeipc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The writing side of a Channel. Lines are written in order, a handle's
// descriptor on the write that carries its line, and further messages wait
// while a handle waits for the peer's answer.
//
// One goroutine at a time writes (c.writing). Whoever queues a line, or
// reads the answer that lets the next one go, and finds nobody writing,
// writes it at once itself, without blocking: a newconn then costs the
// accept loop one sendmsg, and no wake-up of another goroutine, as in
// Node's primary, which writes from its event loop. Only when the socket
// is full (the peer does not read) does the writer goroutine take over and
// wait for room; the caller never blocks on the peer.

// kickLocked claims the right to write when there is something to write
// and nobody writes: the caller then calls flush once it has released mu.
func (c *Channel) kickLocked() bool {
	if c.writing || c.closed || c.werr != nil || !c.writableLocked() {
		return false
	}
	c.writing = true
	c.flushers.Add(1)
	return true
}

// writableLocked: an ACK or NACK may go at any time, a queued message only
// while no handle is in flight.
func (c *Channel) writableLocked() bool {
	return len(c.acks) > 0 || (len(c.queue) > 0 && c.inflight == nil)
}

// takeLocked removes the next line to write, if any.
func (c *Channel) takeLocked() (outgoing, bool) {
	if c.closed {
		return outgoing{}, false
	}
	if len(c.acks) > 0 {
		line := c.acks[0]
		c.acks = c.acks[1:]
		return outgoing{line: line, fd: -1}, true
	}
	if len(c.queue) > 0 && c.inflight == nil {
		out := c.queue[0]
		c.queue[0] = outgoing{}
		c.queue = c.queue[1:]
		if out.fd >= 0 {
			c.inflight = &out
		}
		return out, true
	}
	return outgoing{}, false
}

// flush writes what can be written without waiting, as the holder of the
// right to write (kickLocked). If the socket is full it passes that right,
// and what is left of the line, to the writer goroutine.
func (c *Channel) flush() {
	defer c.flushers.Done()
	for {
		c.mu.Lock()
		out, ok := c.takeLocked()
		if !ok {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		n, err := c.tryWrite(out.line, out.fd)
		if err == unix.EAGAIN {
			c.mu.Lock()
			c.rest = out.line[n:]
			c.restFD = out.fd
			if n > 0 {
				c.restFD = -1 // the descriptor went with the first byte
			}
			c.mu.Unlock()
			c.wake <- struct{}{} // the writer goroutine waits for it, with nothing else
			return
		}
		if err != nil {
			c.failWrite(err)
			return
		}
	}
}

// tryWrite writes line with fd (if >= 0) as SCM_RIGHTS on its first byte,
// without waiting: it returns how much it wrote, and EAGAIN when the socket
// was full before the end.
func (c *Channel) tryWrite(line []byte, fd int) (int, error) {
	n := 0
	var err error
	cerr := c.raw.Write(func(s uintptr) bool {
		for n < len(line) {
			var m int
			if fd >= 0 && n == 0 {
				m, err = rawSendmsg(int(s), line, unix.UnixRights(fd), unix.MSG_NOSIGNAL)
			} else {
				m, err = rawSendmsg(int(s), line[n:], nil, unix.MSG_NOSIGNAL)
			}
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				return true
			}
			n += m
		}
		return true // written, or failed: never wait here
	})
	if err == nil {
		err = cerr
	}
	return n, err
}

// failWrite ends writing for good: later Sends return err.
func (c *Channel) failWrite(err error) {
	c.mu.Lock()
	c.werr = fmt.Errorf("nodeipc: write: %w", err)
	c.writing = false
	c.mu.Unlock()
}

// writer finishes, waiting for room, what flush found no room for, then
// writes on until nothing is left, and gives the right to write back.
func (c *Channel) writer() {
	defer c.writerWG.Done()
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		rest, fd := c.rest, c.restFD
		c.rest, c.restFD = nil, -1
		c.mu.Unlock()
		err := c.write(rest, fd)
		for err == nil {
			c.mu.Lock()
			out, ok := c.takeLocked()
			if !ok {
				c.writing = false
				c.mu.Unlock()
				break
			}
			c.mu.Unlock()
			err = c.write(out.line, out.fd)
		}
		if err != nil {
			c.failWrite(err)
			return
		}
	}
}

// write writes line whole, waiting for room, with fd as SCM_RIGHTS on its
// first bytes.
func (c *Channel) write(line []byte, fd int) error {
	if fd < 0 {
		if len(line) == 0 {
			return nil
		}
		_, err := c.uc.Write(line) // loops over short writes
		return err
	}
	n, _, err := c.uc.WriteMsgUnix(line, unix.UnixRights(fd), nil)
	if err != nil || n == len(line) {
		return err
	}
	// A stream socket may take part of the line; the descriptor went with
	// that part, and the rest follows without it, as libuv's uv__write does.
	_, err = c.uc.Write(line[n:])
	return err
}

// handleAnswered is Recv's report of the peer's NODE_HANDLE_ACK (ack true) or
// NODE_HANDLE_NACK for the handle in flight. A tagged handle it gives up on
// goes to gaveUp, on Recv's goroutine.
func (c *Channel) handleAnswered(ack bool) {
	c.mu.Lock()
	out := c.inflight
	if out == nil {
		c.mu.Unlock()
		return // an answer to nothing: Node ignores it too
	}
	c.inflight = nil
	tag := int64(-1)
	if !ack && out.tries < maxRetransmissions {
		out.tries++
		c.queue = append([]outgoing{*out}, c.queue...) // again, before anything queued after it
	} else {
		out.release()
		tag = out.tag
	}
	kick := c.kickLocked()
	c.mu.Unlock()
	if kick {
		c.flush()
	}
	switch {
	case tag < 0:
	case ack && c.delivered != nil:
		c.delivered(tag)
	case !ack && c.gaveUp != nil:
		c.gaveUp(tag)
	}
}

// answer queues an ACK or NACK line ahead of the queue. Past MaxQueued
// waiting it is dropped: a Node peer waits for the answer to each handle
// before it sends the next, so only a peer that sends handles and does not
// read gets there, and it must not grow this process without bound.
func (c *Channel) answer(line []byte) {
	c.mu.Lock()
	if c.closed || len(c.acks) >= MaxQueued {
		c.mu.Unlock()
		return
	}
	c.acks = append(c.acks, line)
	kick := c.kickLocked()
	c.mu.Unlock()
	if kick {
		c.flush()
	}
}

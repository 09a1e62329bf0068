package nodeipc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The writing side of a Channel: one goroutine writes the queued lines in
// order, a handle's descriptor on the write that carries its line, and
// holds further messages while a handle waits for the peer's answer.

// writer writes queued lines in order until Close or a write error.
func (c *Channel) writer() {
	defer c.writerWG.Done()
	for {
		out, ok := c.next()
		if !ok {
			return
		}
		if err := c.write(out.line, out.fd); err != nil {
			c.mu.Lock()
			c.werr = fmt.Errorf("nodeipc: write: %w", err)
			c.mu.Unlock()
			return
		}
	}
}

// next waits for the next line the writer may write: an ACK or NACK at any
// time, a queued message only while no handle is in flight.
func (c *Channel) next() (outgoing, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
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
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-c.done:
		}
		c.mu.Lock()
	}
}

// write writes line whole, with fd as SCM_RIGHTS on its first bytes.
func (c *Channel) write(line []byte, fd int) error {
	if fd < 0 {
		_, err := c.uc.Write(line) // loops over short writes
		return err
	}
	n, _, err := c.uc.WriteMsgUnix(line, unix.UnixRights(fd), nil)
	if err != nil {
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
		unix.Close(out.fd)
		if !ack {
			tag = out.tag
		}
	}
	c.signal()
	c.mu.Unlock()
	if tag >= 0 && c.gaveUp != nil {
		c.gaveUp(tag)
	}
}

// answer queues an ACK or NACK line ahead of the queue. Past MaxQueued
// waiting it is dropped: a Node peer waits for the answer to each handle
// before it sends the next, so only a peer that sends handles and does not
// read gets there, and it must not grow this process without bound.
func (c *Channel) answer(line []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.acks) >= MaxQueued {
		return
	}
	c.acks = append(c.acks, line)
	c.signal()
}

package nodeipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Message is one message Recv read.
type Message struct {
	// Body is the message as JSON. For a handle message it is the
	// wrapper's "msg", the message the peer passed to send.
	Body json.RawMessage
	// Cmd is Body's "cmd" when Body is an object and cmd a string.
	Cmd string
	// FD is the descriptor that came with a handle message, close-on-exec
	// and owned by the caller; -1 when none came.
	FD int
	// Handle is FD's handle type (HandleNative, HandleServer, ...); empty
	// when FD is -1.
	Handle string
}

// Internal reports whether m is one of Node's internal messages: an
// object whose cmd begins with "NODE_" (isInternal in
// lib/internal/child_process.js). Node emits those as 'internalMessage',
// never to the application's 'message' listeners.
func (m Message) Internal() bool { return isInternal(m.Cmd) }

func isInternal(cmd string) bool {
	return len(cmd) > len("NODE_") && strings.HasPrefix(cmd, "NODE_")
}

// errSkip: the line was handled inside Recv (an ACK, a NACK, a handle
// message without its descriptor); read the next one.
var errSkip = errors.New("skip")

// Recv waits for the next message. It answers the peer's handle messages
// itself, as Node's setupChannel does: NODE_HANDLE_ACK once the descriptor
// arrived, NODE_HANDLE_NACK when it did not (the peer sends it again), and it
// consumes the peer's ACKs and NACKs of the handles Send sent.
//
// A line that is not a message gives an error wrapping ErrBadMessage, and the
// next Recv reads on. At the end of the stream Recv returns io.EOF (or
// io.ErrUnexpectedEOF inside a line); after Close, ErrClosed; a line longer
// than MaxLine ends the channel with ErrLineTooLong. Those errors are final.
func (c *Channel) Recv() (Message, error) {
	for {
		line, fds, err := c.r.next(c.raw)
		if err != nil {
			if c.isClosed() {
				err = ErrClosed
			}
			return Message{FD: -1}, err
		}
		m, err := c.decode(line, fds)
		if err == errSkip {
			continue
		}
		return m, err
	}
}

func (c *Channel) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// decode turns one line, and the descriptors that arrived with it, into a
// message. Every descriptor it does not return is closed.
func (c *Channel) decode(line []byte, fds []int) (Message, error) {
	if len(fds) > 1 {
		closeFDs(fds[1:]) // Node attaches one descriptor to a message
		fds = fds[:1]
	}
	fail := func(format string, args ...any) (Message, error) {
		closeFDs(fds)
		return Message{FD: -1}, fmt.Errorf("%w: "+format, append([]any{ErrBadMessage}, args...)...)
	}
	if len(fds) == 0 { // the per-connection lines, without encoding/json
		if bytes.Equal(line, ackBody) {
			c.handleAnswered(true)
			return Message{FD: -1}, errSkip
		}
		if _, _, ok := clusterAck(line); ok {
			return Message{Body: bytes.Clone(line), Cmd: cmdCluster, FD: -1}, nil
		}
	}
	if !json.Valid(line) {
		return fail("%d bytes of invalid JSON: %q", len(line), clip(line))
	}
	var hdr struct {
		Cmd  json.RawMessage `json:"cmd"`
		Type json.RawMessage `json:"type"`
		Msg  json.RawMessage `json:"msg"`
	}
	if isObject(line) {
		if err := json.Unmarshal(line, &hdr); err != nil {
			return fail("%v", err)
		}
	}
	switch cmd := jsonString(hdr.Cmd); cmd {
	case cmdHandleAck, cmdHandleNack:
		closeFDs(fds)
		c.handleAnswered(cmd == cmdHandleAck)
		return Message{FD: -1}, errSkip
	case cmdHandle:
		if len(fds) == 0 {
			// The descriptor did not arrive (MSG_CTRUNC: this
			// process is out of descriptors): ask for it again.
			c.answer(nackLine)
			return Message{FD: -1}, errSkip
		}
		// Acknowledge before looking further, as Node does, so that a
		// wrapper we refuse below does not stall the peer's queue.
		c.answer(ackLine)
		typ := jsonString(hdr.Type)
		if !knownHandle(typ) {
			return fail("handle of unknown type %q", clip(hdr.Type))
		}
		if len(hdr.Msg) == 0 {
			return fail("handle message without msg")
		}
		body := bytes.Clone(hdr.Msg)
		return Message{Body: body, Cmd: cmdOf(body), FD: fds[0], Handle: typ}, nil
	default:
		// A descriptor on a line that is no handle message belongs to
		// nothing; Node drops it too.
		closeFDs(fds)
		return Message{Body: bytes.Clone(line), Cmd: cmd, FD: -1}, nil
	}
}

func knownHandle(typ string) bool {
	switch typ {
	case HandleNative, HandleServer, HandleSocket, HandleDgramNative, HandleDgram:
		return true
	}
	return false
}

// cmdOf returns body's "cmd" when body is an object with a string cmd.
func cmdOf(body []byte) string {
	if !isObject(body) {
		return ""
	}
	var hdr struct {
		Cmd json.RawMessage `json:"cmd"`
	}
	if json.Unmarshal(body, &hdr) != nil {
		return ""
	}
	return jsonString(hdr.Cmd)
}

func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// jsonString returns raw's value when raw is a JSON string, else "".
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// clip shortens b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// reader splits the stream into lines and pairs each received descriptor
// with its line.
//
// Node sends a handle with the write of its message's line: libuv passes the
// descriptor as SCM_RIGHTS on the sendmsg that carries the line's first
// byte. On Linux a stream read stops after the data that carried
// descriptors (unix_stream_read_generic breaks once it has detached an
// skb's files), so the read that brings a descriptor ends inside its line:
// the descriptor belongs to the line holding the last byte of that read.
type reader struct {
	mem  []byte // buffer; buf is a window of it
	buf  []byte // bytes read and not yet returned; buf[0] starts line number `line`
	scan int    // buf[:scan] holds no newline
	line uint64
	oob  []byte
	err  error // final

	mu  sync.Mutex // fds is closed by Close from another goroutine
	fds []lineFD
}

type lineFD struct {
	line uint64
	fd   int
}

const readChunk = 64 << 10

func (r *reader) init() {
	r.oob = make([]byte, unix.CmsgSpace(16*4))
}

// next returns the next line, without its newline, valid until the next
// call, and the descriptors that came with it, which the caller owns.
func (r *reader) next(rc syscall.RawConn) ([]byte, []int, error) {
	r.shrink()
	for {
		if i := bytes.IndexByte(r.buf[r.scan:], '\n'); i >= 0 {
			end := r.scan + i
			line := r.buf[:end]
			fds := r.take(r.line)
			r.line++
			r.buf, r.scan = r.buf[end+1:], 0
			return line, fds, nil
		}
		r.scan = len(r.buf)
		if r.err != nil {
			return nil, nil, r.err
		}
		if len(r.buf) >= MaxLine {
			r.fail(fmt.Errorf("%w: no newline in %d bytes", ErrLineTooLong, len(r.buf)))
			continue
		}
		r.read(rc)
	}
}

// shrink gives back a buffer a long line grew, once what is left of it
// fits a chunk: a burst of long lines must not keep the supervisor large
// for good. The line next returned last aliases mem; its caller is done
// with it by now.
func (r *reader) shrink() {
	if cap(r.mem) <= 4*readChunk || len(r.buf) > readChunk {
		return
	}
	mem := make([]byte, readChunk)
	n := copy(mem, r.buf)
	r.mem, r.buf = mem, mem[:n:len(mem)]
	r.scan = min(r.scan, n)
}

// read appends what one read brings to buf, or sets err.
func (r *reader) read(rc syscall.RawConn) {
	r.grow()
	room := r.buf[len(r.buf) : len(r.buf)+min(cap(r.buf)-len(r.buf), MaxLine-len(r.buf))]
	var n, oobn int
	var err error
	// Read waits for the socket to be readable whenever the callback says
	// it would block. rawRecvmsg (raw.go) asks for MSG_CMSG_CLOEXEC, as
	// Go's ReadMsgUnix does, so a descriptor received here cannot leak
	// into a child spawned meanwhile.
	if rerr := rc.Read(func(s uintptr) bool {
		for {
			n, oobn, err = rawRecvmsg(int(s), room, r.oob)
			if err != unix.EINTR {
				return err != unix.EAGAIN
			}
		}
	}); rerr != nil {
		n, oobn, err = 0, 0, rerr
	}
	// MSG_CTRUNC (out of descriptors) is not checked: the kernel drops
	// what it did not install, and the handle message that misses its
	// descriptor is answered with a NACK.
	fds := parseRights(r.oob[:oobn])
	if n > 0 {
		old := len(r.buf)
		r.buf = r.buf[:old+n]
		if len(fds) > 0 {
			line := r.line + uint64(bytes.Count(r.buf[:old+n-1], []byte{'\n'}))
			r.mu.Lock()
			for _, fd := range fds {
				r.fds = append(r.fds, lineFD{line, fd})
			}
			r.mu.Unlock()
			fds = nil
		}
	}
	closeFDs(fds) // with no data: nothing to pair them with
	switch {
	case err == nil && n > 0:
	case err == nil || errors.Is(err, io.EOF):
		if len(r.buf) > 0 {
			r.fail(fmt.Errorf("nodeipc: stream ended inside a line: %w", io.ErrUnexpectedEOF))
		} else {
			r.fail(io.EOF)
		}
	default:
		r.fail(fmt.Errorf("nodeipc: read: %w", err))
	}
}

// grow makes room after buf: it moves buf to the front of mem, and enlarges
// mem (up to MaxLine) when a chunk still does not fit.
func (r *reader) grow() {
	if free := cap(r.buf) - len(r.buf); free >= readChunk || free >= MaxLine-len(r.buf) {
		return // room for a chunk, or for the rest of the longest line
	}
	need := min(max(2*len(r.buf), len(r.buf)+readChunk), MaxLine)
	if len(r.mem) < need {
		r.mem = make([]byte, need)
	}
	// copy handles the overlap when buf already lies in mem.
	n := copy(r.mem, r.buf)
	r.buf = r.mem[:n:len(r.mem)]
}

func (r *reader) fail(err error) {
	r.err = err
	r.closeFDs()
}

// take removes and returns the descriptors of line.
func (r *reader) take(line uint64) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fds []int
	for len(r.fds) > 0 && r.fds[0].line <= line {
		if r.fds[0].line == line {
			fds = append(fds, r.fds[0].fd)
		} else {
			unix.Close(r.fds[0].fd) // unreachable: lines are taken in order
		}
		r.fds = r.fds[1:]
	}
	return fds
}

func (r *reader) closeFDs() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.fds {
		unix.Close(l.fd)
	}
	r.fds = nil
}

// parseRights returns the descriptors of every SCM_RIGHTS message in oob.
func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil // the kernel writes well-formed control messages
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

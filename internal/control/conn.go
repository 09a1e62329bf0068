package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
)

// One connection: its request read and checked, the Handler run (and
// cancelled if the client hangs up), the answer written, or the events
// streamed.

// errNoRequest: the client closed without sending anything; nothing to answer.
var errNoRequest = errors.New("control: connection closed before a request")

// serveConn reads one request from c and answers it, or streams events.
func (s *Server) serveConn(c *net.UnixConn, h Handler, events *Broadcaster) {
	defer c.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	br := bufio.NewReaderSize(c, MaxRequestLine)

	// Close interrupts the read by closing c: there is no answer to lose yet.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	req, err := s.readRequest(c, br)
	if !stop() {
		return
	}
	if err != nil {
		s.log.Debug("bad request", zap.Error(err))
		if !errors.Is(err, errNoRequest) {
			s.reply(c, Response{Error: err.Error()})
		}
		return
	}
	s.log.Debug("request", zap.String("cmd", string(req.Cmd)), zap.Int("n", req.N))
	if req.Cmd == CmdEvents {
		s.stream(ctx, cancel, c, br, events)
		return
	}
	// The answer is written even if the server closes meanwhile: "stop" is
	// answered just as the supervisor begins to close its control socket.
	s.reply(c, s.do(ctx, cancel, c, br, h, req))
}

// readRequest reads and checks the request line.
func (s *Server) readRequest(c *net.UnixConn, br *bufio.Reader) (Request, error) {
	c.SetReadDeadline(time.Now().Add(s.requestTimeout))
	line, err := br.ReadSlice('\n')
	switch {
	case err == nil:
	case errors.Is(err, bufio.ErrBufferFull):
		return Request{}, fmt.Errorf("control: request line longer than %d bytes", MaxRequestLine)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Request{}, fmt.Errorf("control: no request line within %v", s.requestTimeout)
	case err == io.EOF && len(bytes.TrimSpace(line)) > 0:
		// a last line without "\n" from a client that shut down its write side
	case err == io.EOF:
		return Request{}, errNoRequest
	default:
		return Request{}, fmt.Errorf("%w: %v", errNoRequest, err)
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Request{}, fmt.Errorf("control: malformed request: %v", err)
	}
	return req, req.Validate()
}

// do runs the Handler, with ctx cancelled if the client hangs up meanwhile.
// A panicking Handler is answered with an error and logged; Do only passes
// requests to the supervisor's owner goroutine, whose state it cannot leave
// half-changed.
func (s *Server) do(ctx context.Context, cancel context.CancelFunc, c *net.UnixConn, br *bufio.Reader, h Handler, req Request) (resp Response) {
	defer s.watchPeer(c, br, cancel)()
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("handler panicked", zap.String("cmd", string(req.Cmd)), zap.Any("panic", v), zap.StackSkip("stack", 2))
			resp = Response{Error: fmt.Sprintf("control: %s: internal error", req.Cmd)}
		}
	}()
	return h.Do(context.WithValue(ctx, connKey{}, c), req)
}

// watchPeer cancels when the client goes away, by reading (and discarding)
// until EOF or an error; a client that only shut down its write side is
// still waiting for its answer and is not a hang-up. The returned stop ends
// the watch, by a read deadline in the past, and waits for it.
func (s *Server) watchPeer(c *net.UnixConn, br *bufio.Reader, cancel context.CancelFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := br.WriteTo(io.Discard) // nil at EOF
		switch {
		case err == nil:
			hup := hungUp(c)
			if s.testHookPeerEOF != nil {
				s.testHookPeerEOF(hup)
			}
			if hup {
				cancel()
			}
		case errors.Is(err, os.ErrDeadlineExceeded): // stopped
		default:
			cancel()
		}
	}()
	return func() {
		c.SetReadDeadline(time.Unix(1, 0))
		<-done
	}
}

// reply writes r as one line.
func (s *Server) reply(c *net.UnixConn, r Response) {
	b, err := json.Marshal(r)
	if err != nil {
		s.log.Error("cannot encode answer", zap.Error(err))
		b, _ = json.Marshal(Response{Error: "control: cannot encode the answer: " + err.Error()})
	}
	c.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	if _, err := c.Write(append(b, '\n')); err != nil {
		s.log.Debug("answer not delivered", zap.Error(err))
	}
}

// stream writes a "subscribed" event, then every event published, until
// the client goes away or the server closes. It waits for the subscription
// to be ready and writes everything queued at once. Events that a slow
// client misses are the Broadcaster's to count; the write itself has no
// deadline, so a client that stops reading holds its connection until it
// reads again or closes.
func (s *Server) stream(ctx context.Context, cancel context.CancelFunc, c *net.UnixConn, br *bufio.Reader, events *Broadcaster) {
	if events == nil {
		s.reply(c, Response{Error: "control: this supervisor publishes no events"})
		return
	}
	sub := events.Subscribe()
	defer sub.Close()
	defer s.watchPeer(c, br, cancel)()
	defer context.AfterFunc(ctx, func() { c.Close() })() // interrupts a blocked write
	var buf bytes.Buffer
	batch := []*line{{e: Event{Time: now(), Kind: EventSubscribed}}}
	for s.send(c, &buf, batch) {
		clear(batch) // let the events go while waiting
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
		}
		batch = sub.takeLines(batch[:0])
	}
}

// send writes events, one line each, in one write; false if the client is
// gone. An event that cannot be encoded is logged and skipped.
func (s *Server) send(c *net.UnixConn, buf *bytes.Buffer, events []*line) bool {
	buf.Reset()
	for _, l := range events {
		b, err := l.bytes()
		if err != nil {
			s.log.Error("cannot encode event", zap.String("event", string(l.e.Kind)), zap.Error(err))
			continue
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if buf.Len() == 0 {
		return true
	}
	_, err := c.Write(buf.Bytes())
	return err == nil
}

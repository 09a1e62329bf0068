package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Limits of the server.
const (
	MaxRequestLine = 4096 // bytes of a request line, "\n" included
	// MaxConns bounds the connections served at once; more are answered
	// "busy". It is high enough that dozens of idle event subscribers and
	// hundreds of clients that connect and say nothing (each held until
	// its request times out) still leave room for an operator's ctl, and
	// low enough to bound the fds and memory (a goroutine and a 4 KiB
	// buffer each) that the control socket can take from the supervisor.
	MaxConns = 512

	defaultRequestTimeout = 5 * time.Second  // to send the request line after connecting
	defaultWriteTimeout   = 10 * time.Second // for a client to take an answer
)

// maxPathLen is the longest socket path bind(2) takes: sun_path less its NUL.
const maxPathLen = 107

var (
	// ErrInUse is returned by Listen when a server answers on the path.
	ErrInUse = errors.New("control: a live supervisor already answers on this socket")
	// ErrNotSocket is returned by Listen when the path is taken by something
	// other than a socket, which it never removes.
	ErrNotSocket = errors.New("control: path exists and is not a socket")
)

// errNoRequest: the client closed without sending anything; nothing to answer.
var errNoRequest = errors.New("control: connection closed before a request")

// Server serves the control socket: one goroutine per connection, at most
// MaxConns at once.
//
// Only processes running with the server's own effective uid are served;
// the socket file is 0600 and every connection's SO_PEERCRED is checked as
// well, so widening the file's mode does not let anyone else in. Root is not
// an exception: to control a supervisor running as another user, run ctl as
// that user (sudo -u).
type Server struct {
	path string
	file os.FileInfo // the socket file as created: Close removes only this one
	log  *zap.Logger
	ln   *net.UnixListener

	requestTimeout  time.Duration
	writeTimeout    time.Duration
	maxConns        int
	testHookPeerEOF func(hungUp bool) // called when a client's EOF is seen during Do

	ctx       context.Context // cancelled by Close; parent of every connection's
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
	serving   atomic.Bool
	conns     sync.WaitGroup
}

// Listen creates the control socket at path, mode 0600. A path in
// DefaultDir has that directory made private first (see DefaultDir), or
// fails with ErrUnsafeDir. It fails with
// ErrInUse if a server answers there, and with ErrNotSocket if path is
// anything but a socket; a socket nobody answers on, left by a supervisor
// that died, is removed and replaced. log is used as given (name it, as in
// log.Named("control")); nil logs nothing.
func Listen(path string, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("control: socket path %s is %d bytes long, more than the %d a unix socket takes", path, len(path), maxPathLen)
	}
	if inDefaultDir(path) {
		if err := makePrivateDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	if err := removeStale(path, log); err != nil {
		return nil, err
	}
	ln, fi, err := bindPrivate(path)
	if err != nil {
		return nil, err
	}
	return newServer(path, fi, log, ln), nil
}

// newServer serves on ln, bound at path, whose file is fi.
func newServer(path string, fi os.FileInfo, log *zap.Logger, ln *net.UnixListener) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		path:           path,
		file:           fi,
		log:            log,
		ln:             ln,
		requestTimeout: defaultRequestTimeout,
		writeTimeout:   defaultWriteTimeout,
		maxConns:       MaxConns,
		ctx:            ctx,
		cancel:         cancel,
	}
}

// removeStale removes a socket at path that nobody answers on.
func removeStale(path string, log *zap.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: listen: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: %s", ErrNotSocket, path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	// For a unix socket ECONNREFUSED means nothing is bound to the file any
	// more. Anything else (EACCES, EAGAIN from a full backlog of a live
	// server) leaves the file alone.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: listen %s: cannot tell whether a supervisor answers there: %w", path, err)
	}
	if again, err := os.Lstat(path); err != nil || !os.SameFile(fi, again) {
		return nil // replaced meanwhile; bindPrivate's link will not clobber it
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: remove stale socket: %w", err)
	}
	log.Info("removed stale control socket", zap.String("path", path))
	return nil
}

// bindPrivate binds the socket under a temporary name in a new 0700
// directory next to path, makes it 0600 and only then links it at path.
// bind(2) creates the file with mode 0777 &^ umask, and setting the umask
// would change it for every goroutine of the process creating files at the
// time; inside the private directory no other user can reach the socket
// before its mode is final. link(2), unlike rename(2), fails if path exists,
// so a file that appeared meanwhile is never replaced.
func bindPrivate(path string) (*net.UnixListener, os.FileInfo, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".ctl")
	if err != nil {
		return nil, nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes path, not tmp
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		return nil, nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Link(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, fi, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections and serves them until Close. Requests go to h;
// "events" streams events's events, or is answered with an error if events
// is nil.
//
// Serve returns nil once Close has been called, after waiting for the
// connections' goroutines (a Handler that ignores its ctx delays it).
// Accept errors that pass (out of fds or memory: EMFILE, ENFILE, ENOBUFS,
// ENOMEM; a client that gave up: ECONNABORTED; EINTR) are logged and
// retried after a pause that doubles from 5ms up to 1s, as net/http does;
// the connections waiting meanwhile stay in the listen backlog. Any other
// error means the socket no longer works: Serve returns it, wrapped, after
// waiting for the connections as above, and the control socket is dead
// until the caller acts. The caller should log it, Close the server and,
// to keep `ctl` working, Listen again on the same path. Serve returns an
// error at once if h is nil or if it was called before.
func (s *Server) Serve(h Handler, events *Broadcaster) error {
	if h == nil {
		return errors.New("control: Serve needs a Handler")
	}
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("control: Serve called more than once")
	}
	defer s.conns.Wait()
	slots := make(chan struct{}, s.maxConns)
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			if !retryable(err) {
				return fmt.Errorf("control: accept: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		if !s.admit(c) {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			s.log.Warn("refused connection: too many", zap.Int("limit", s.maxConns))
			s.refuse(c, fmt.Sprintf("control: busy: %d connections already open", s.maxConns))
			continue
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer func() { <-slots }()
			s.serveConn(c, h, events)
		}()
	}
}

// retryable reports whether accept may succeed later: out of fds or memory,
// or a client that gave up before it was accepted.
func retryable(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// admit checks the peer's credentials, and refuses a peer of another uid.
// It compares with the effective uid, which is what SO_PEERCRED reports of
// the peer and what owns the socket file (for a supervisor that is not
// setuid, the same as os.Getuid).
func (s *Server) admit(c *net.UnixConn) bool {
	pid, uid, err := peerCred(c)
	if err != nil {
		s.log.Warn("refused connection: no peer credentials", zap.Error(err))
		s.refuse(c, "control: cannot check the peer's credentials: "+err.Error())
		return false
	}
	if uid != os.Geteuid() {
		s.log.Warn("refused connection from another user", zap.Int("uid", uid), zap.Int("pid", pid))
		s.refuse(c, fmt.Sprintf("control: permission denied: peer uid %d", uid))
		return false
	}
	return true
}

// refuse answers msg without reading the request and closes c. It runs on
// the accept loop: the write goes into a fresh socket's empty send buffer,
// and the deadline bounds it anyway.
func (s *Server) refuse(c *net.UnixConn, msg string) {
	defer c.Close()
	b, _ := json.Marshal(Response{Error: msg})
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(append(b, '\n'))
}

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
	batch := []Event{{Time: now(), Kind: EventSubscribed}}
	for s.send(c, &buf, batch) {
		clear(batch) // let the events go while waiting
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
		}
		batch = sub.Take(batch[:0])
	}
}

// send writes events, one line each, in one write; false if the client is
// gone. An event that cannot be encoded is logged and skipped.
func (s *Server) send(c *net.UnixConn, buf *bytes.Buffer, events []Event) bool {
	buf.Reset()
	for _, e := range events {
		b, err := marshalEvent(e)
		if err != nil {
			s.log.Error("cannot encode event", zap.String("event", string(e.Kind)), zap.Error(err))
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

// Close stops accepting, cancels the contexts of requests in progress,
// closes event streams and removes the socket file (if it is still the one
// Listen made). A request already answered by its Handler still gets its
// answer written. Close does not wait; Serve returns once every connection
// is done. Calling Close again does nothing and returns the same error.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		rmErr := s.removeSocket() // first, so that no one connects meanwhile
		if err := s.ln.Close(); err != nil {
			s.closeErr = fmt.Errorf("control: close: %w", err)
		}
		if rmErr != nil {
			s.closeErr = rmErr
		}
	})
	return s.closeErr
}

func (s *Server) removeSocket() error {
	fi, err := os.Lstat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: remove socket: %w", err)
	}
	if !os.SameFile(fi, s.file) {
		s.log.Warn("socket path replaced by another server; leaving it", zap.String("path", s.path))
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: remove socket: %w", err)
	}
	return nil
}

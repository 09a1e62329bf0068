package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
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

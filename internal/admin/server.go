package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/prefork/prefork/internal/httpserve"
)

// Server is the admin listener.
type Server struct {
	*httpserve.Server
	api    *api
	cert   *Certificate // nil for plain HTTP
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
	err    error
}

// Serve listens on addr and serves o until Close. A port of 0 picks a free
// port; Addr reports it. Close ends the event streams.
func Serve(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s, err := ServeListener(ln, addr, o)
	if err != nil {
		ln.Close()
	}
	return s, err
}

// ServeListener is Serve on ln, bound already at addr (a supervisor kept
// it across an in-place upgrade), which it takes if it succeeds. It fails
// if the auth file or the certificate cannot be read.
func ServeListener(ln net.Listener, addr string, o Options) (*Server, error) {
	h, a, err := newAPI(addr, o)
	if err != nil {
		return nil, err
	}
	s := &Server{api: a}
	var cfg *tls.Config
	if o.TLSCert != "" || o.TLSKey != "" {
		if s.cert, err = LoadCertificate(o.TLSCert, o.TLSKey); err != nil {
			return nil, err
		}
		cfg = s.cert.config()
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	sub := o.Events.Subscribe() // now: what is published from here on is kept
	s.wg.Add(2)
	go func() { defer s.wg.Done(); a.hub.run(ctx, sub) }()
	go func() { defer s.wg.Done(); a.sample(ctx) }()
	s.Server = httpserve.ServeTLS(ln, h, a.Log, cfg)
	return s, nil
}

// Reload reads the auth file and the certificate again (on SIGHUP). What
// cannot be read is reported, and the one in use stays.
func (s *Server) Reload() error {
	var errs []error
	if s.api.AuthFile != "" {
		if auth, err := LoadAuth(s.api.AuthFile); err != nil {
			errs = append(errs, err)
		} else {
			s.api.auth.Store(auth)
		}
	}
	if s.cert != nil {
		errs = append(errs, s.cert.Reload())
	}
	return errors.Join(errs...)
}

// Close stops the listener, ends the event streams and the sampling.
// Calling it again does nothing and returns the same error.
func (s *Server) Close() error {
	s.closed.Do(func() {
		s.err = s.Server.Close()
		s.stop()
		s.wg.Wait()
	})
	return s.err
}

// Clients is the number of event stream clients connected now.
func (s *Server) Clients() int { return s.api.hub.clientCount() }

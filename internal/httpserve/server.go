// Package httpserve runs the supervisor's HTTP listeners beside the
// workers' port (-metrics, -admin): on a listener of their own, so that
// they neither compete with traffic nor depend on a worker being up, and
// with a Close that ends even the requests that never end by themselves
// (event streams).
//
// ServeTLS serves HTTPS on the same terms (the admin listener with
// -admin-tls-cert); Listener still returns the TCP listener, which an
// in-place upgrade keeps.
//
//	srv, err := httpserve.Listen("127.0.0.1:9090", mux, log)
//	...
//	srv.Close()
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// CloseWait is how long Close lets requests in progress finish before it
// closes their connections.
const CloseWait = 2 * time.Second

// Server serves one handler on one listener until Close.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	log    *zap.Logger
	cancel context.CancelFunc // cancels every request's context
	done   chan struct{}      // closed when srv.Serve has returned

	closeOnce sync.Once
	closeErr  error
}

// Listen listens on addr and serves h until Close. A port of 0 picks a
// free port; Addr reports it. A nil log discards the server's log.
func Listen(addr string, h http.Handler, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Serve(ln, h, log), nil
}

// Serve is Listen on ln, a listener already bound (for example one kept
// across an in-place upgrade), which it takes: Close closes it.
func Serve(ln net.Listener, h http.Handler, log *zap.Logger) *Server {
	return ServeTLS(ln, h, log, nil)
}

// ServeTLS is Serve over TLS with cfg, which must give the certificate
// (Certificates or GetCertificate); a nil cfg is plain HTTP. Listener
// still returns ln, whose descriptor an upgrade keeps.
func ServeTLS(ln net.Listener, h http.Handler, log *zap.Logger, cfg *tls.Config) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(log),
			BaseContext:       func(net.Listener) context.Context { return ctx },
			TLSConfig:         cfg,
		},
		log:    log,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go s.serve()
	return s
}

// Listener is the server's listening socket.
func (s *Server) Listener() net.Listener { return s.ln }

func (s *Server) serve() {
	defer close(s.done)
	var err error
	if s.srv.TLSConfig != nil {
		err = s.srv.ServeTLS(s.ln, "", "") // the certificate is in TLSConfig
	} else {
		err = s.srv.Serve(s.ln)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("httpserve: serve", zap.Error(err))
	}
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening, cancels every request's context (which ends the
// event streams), lets the requests finish within CloseWait, closes every
// connection and returns once the server has stopped. Calling it again
// does nothing and returns the same error.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), CloseWait)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			// The listener is already closed; drop the stragglers.
			_ = s.srv.Close()
			err = nil
		}
		if err != nil {
			s.closeErr = fmt.Errorf("httpserve: close: %w", err)
		}
		<-s.done
	})
	return s.closeErr
}

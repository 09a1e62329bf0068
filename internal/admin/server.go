package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Server is the admin listener.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	api    *api
	log    *zap.Logger
	cancel context.CancelFunc // ends the event streams, which never end by themselves
	done   chan struct{}      // closed when srv.Serve has returned

	closeOnce sync.Once
	closeErr  error
}

// Serve listens on addr and serves o until Close. A port of 0 picks a free
// port; Addr reports it.
func Serve(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	h, a := newAPI(o)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		ln:  ln,
		api: a,
		log: a.Log,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(a.Log),
			BaseContext:       func(net.Listener) context.Context { return ctx },
		},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go s.serve()
	return s, nil
}

func (s *Server) serve() {
	defer close(s.done)
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin: serve", zap.Error(err))
	}
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Clients is the number of event stream clients connected now.
func (s *Server) Clients() int { return int(s.api.clients.Load()) }

// Close stops listening, ends the event streams, lets other requests
// finish for a few seconds (an action in progress goes on in the
// supervisor), closes every connection and returns once the server has
// stopped. Calling it again does nothing and returns the same error.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			_ = s.srv.Close()
			err = nil
		}
		if err != nil {
			s.closeErr = fmt.Errorf("admin: close: %w", err)
		}
		<-s.done
	})
	return s.closeErr
}

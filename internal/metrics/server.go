package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Server serves the metrics on a listener of its own, separate from the
// workers' port, so that scrapes neither compete with traffic nor depend on
// a worker being up.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	log  *zap.Logger
	done chan struct{} // closed when srv.Serve has returned

	closeOnce sync.Once
	closeErr  error
}

const indexPage = `<!DOCTYPE html>
<html><head><title>prefork</title></head>
<body><h1>prefork</h1><p><a href="/metrics">metrics</a></p></body></html>
`

// Serve listens on addr and serves /metrics, and a page at / linking it,
// until Close. A port of 0 picks a free port; Addr reports it. A nil log
// discards the server's log.
func Serve(addr string, m *Metrics, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return ServeListener(ln, m, log), nil
}

// ServeListener is Serve on ln, a listener already bound (one a
// supervisor kept across an in-place upgrade), which it takes.
func ServeListener(ln net.Listener, m *Metrics, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler(log))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, indexPage)
	})
	s := &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(log),
		},
		log:  log,
		done: make(chan struct{}),
	}
	go s.serve()
	return s
}

// Listener is the server's listening socket.
func (s *Server) Listener() net.Listener { return s.ln }

func (s *Server) serve() {
	defer close(s.done)
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics: serve", zap.Error(err))
	}
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string {
	return s.ln.Addr().String()
}

// Close stops listening, lets scrapes in progress finish (each is bounded
// by [ScrapeTimeout]), closes every connection and returns once the server
// has stopped. Calling Close again does nothing and returns the same error.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ScrapeTimeout)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			// The listener is already closed; drop the stragglers.
			_ = s.srv.Close()
			err = nil
		}
		if err != nil {
			s.closeErr = fmt.Errorf("metrics: close: %w", err)
		}
		<-s.done
	})
	return s.closeErr
}

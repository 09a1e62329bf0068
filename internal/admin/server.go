package admin

import (
	"fmt"
	"net"

	"github.com/prefork/prefork/internal/httpserve"
)

// Server is the admin listener.
type Server struct {
	*httpserve.Server
	api *api
}

// Serve listens on addr and serves o until Close. A port of 0 picks a free
// port; Addr reports it. Close ends the event streams.
func Serve(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ServeListener(ln, addr, o), nil
}

// ServeListener is Serve on ln, bound already at addr (a supervisor kept
// it across an in-place upgrade), which it takes.
func ServeListener(ln net.Listener, addr string, o Options) *Server {
	h, a := newAPI(addr, o)
	return &Server{Server: httpserve.Serve(ln, h, a.Log), api: a}
}

// Clients is the number of event stream clients connected now.
func (s *Server) Clients() int { return int(s.api.clients.Load()) }

package admin

import (
	"fmt"

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
	h, a := newAPI(addr, o)
	srv, err := httpserve.Listen(addr, h, a.Log)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return &Server{Server: srv, api: a}, nil
}

// Clients is the number of event stream clients connected now.
func (s *Server) Clients() int { return int(s.api.clients.Load()) }

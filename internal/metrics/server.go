package metrics

import (
	"fmt"
	"io"
	"net"
	"net/http"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/httpserve"
)

// Server serves the metrics on a listener of its own, separate from the
// workers' port, so that scrapes neither compete with traffic nor depend on
// a worker being up. Its Close lets scrapes in progress finish: each is
// bounded by [ScrapeTimeout], less than [httpserve.CloseWait].
type Server = httpserve.Server

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
	return httpserve.Serve(ln, mux, log)
}

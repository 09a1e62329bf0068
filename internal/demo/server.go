package demo

import (
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server limits. WriteTimeout covers the whole response, so it is kept
// above the longest /sleep.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = maxSleepMS*time.Millisecond + 15*time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10
)

// NewServer returns an *http.Server for h with timeouts set against slow
// clients: 5s to read headers, 30s to read the request, 75s to write the
// response (longer than the longest /sleep), 60s idle between keep-alive
// requests and at most 64 KiB of headers. The server's own errors (TLS
// handshakes, accept failures, handler panics) go to log at warn level.
// A nil log discards them.
func NewServer(h http.Handler, log *zap.Logger) *http.Server {
	if log == nil {
		log = zap.NewNop()
	}
	errLog, err := zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel)
	if err != nil { // only for an invalid level
		errLog = zap.NewStdLog(log.Named("http"))
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
}

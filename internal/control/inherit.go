package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
)

// These serve a supervisor that re-executes itself in place (`ctl
// upgrade`): the control socket and the connection of the client that
// asked survive execve, and the new image serves and answers on them.

type connKey struct{}

// ConnFile returns a duplicate of the connection a Handler's request came
// on, from the ctx Do was given, so that the answer can be written after
// the process has re-executed itself. The duplicate is close-on-exec, as
// every descriptor Go opens; the caller clears that when it means to keep
// it across execve, and closes it.
func ConnFile(ctx context.Context) (*os.File, error) {
	c, ok := ctx.Value(connKey{}).(*net.UnixConn)
	if !ok {
		return nil, errors.New("control: no connection in this context")
	}
	f, err := c.File()
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return f, nil
}

// Answer writes r as one line on f, a connection a request came on (see
// ConnFile), and closes f.
func Answer(f *os.File, r Response) error {
	defer f.Close()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	f.SetWriteDeadline(time.Now().Add(defaultWriteTimeout)) // fails harmlessly on a blocking descriptor
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control: answer: %w", err)
	}
	return nil
}

// Inherit serves the control socket at path on f, its listening socket
// inherited across execve, and takes f. It fails if f is not a listening
// unix socket or path is no longer that socket's file.
func Inherit(path string, f *os.File, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	defer f.Close() // FileListener works on its own duplicate
	nl, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control: inherit %s: %w", path, err)
	}
	ln, ok := nl.(*net.UnixListener)
	if !ok {
		nl.Close()
		return nil, fmt.Errorf("control: inherit %s: not a unix socket", path)
	}
	ln.SetUnlinkOnClose(false) // Close removes path itself, if it is still ours
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: inherit %s: %w", path, err)
	}
	return newServer(path, fi, log, ln), nil
}

// Listener returns the server's listening socket, for a supervisor that
// keeps it across execve.
func (s *Server) Listener() *net.UnixListener { return s.ln }

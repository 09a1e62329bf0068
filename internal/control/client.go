package control

import (
	"bufio"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

// MaxResponseLine bounds a line the client reads: a Status of a few
// thousand workers fits many times over.
const MaxResponseLine = 16 << 20

// Call sends req to the server at path and returns its answer. An error
// means no answer came: the server could not be reached (the error wraps the
// *net.OpError, so errors.Is finds fs.ErrNotExist, syscall.ECONNREFUSED or
// fs.ErrPermission), it closed without answering, or ctx ended first (the
// error wraps ctx.Err(), and the server cancels the request). A refusal by
// the supervisor is a Response with OK false.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	c, err := dial(ctx, path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()

	// A write error does not end the call: a server that refuses a peer
	// answers and closes without reading, and the answer is still there to
	// be read.
	werr := writeRequest(c, req)
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("control: %s: %w", req.Cmd, ctx.Err())
		}
		if werr != nil {
			err = werr
		}
		return Response{}, fmt.Errorf("control: %s: no answer from %s: %w", req.Cmd, path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("control: %s: malformed answer from %s: %v", req.Cmd, path, err)
	}
	return resp, nil
}

// Events subscribes to the server's events at path and calls fn with each,
// starting with {"event":"subscribed"} once the subscription is in place.
// It returns fn's error if fn fails, ctx.Err() when ctx ends, nil when the
// server ends the stream (the supervisor stopped), and an error carrying
// the server's message if it refuses.
func Events(ctx context.Context, path string, fn func(Event) error) error {
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	werr := writeRequest(c, Request{Cmd: CmdEvents})
	br := bufio.NewReader(c)
	for first := true; ; first = false {
		line, err := readLine(br)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == io.EOF && !first:
			return nil
		case err != nil && werr != nil:
			return fmt.Errorf("control: events: %w", werr)
		case err != nil:
			return fmt.Errorf("control: events from %s: %w", path, err)
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("control: events: malformed line from %s: %v", path, err)
		}
		if e.Kind == "" { // a Response: the server refused
			var resp Response
			json.Unmarshal(line, &resp)
			if resp.Error == "" {
				resp.Error = "control: events: unexpected line " + string(line)
			}
			return errors.New(resp.Error)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// ErrUntrustedServer is returned by Call and Events when the process that
// answers on the socket runs as neither the client's user nor root.
var ErrUntrustedServer = errors.New("control: the server runs as another user")

// dial connects to the server at path, after checking the directory of a
// path in DefaultDir, and checks who answers: only a server running as the
// client's effective uid, or as root, is trusted with a request and with
// what ctl prints.
func dial(ctx context.Context, path string) (*net.UnixConn, error) {
	if inDefaultDir(path) {
		// A missing directory is left to connect(2) to report, with the path.
		if err := checkPrivateDir(filepath.Dir(path), false); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	uc := c.(*net.UnixConn)
	_, uid, err := peerCred(uc)
	if err == nil {
		err = trustServer(uid, os.Geteuid())
	}
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("control: %s: %w", path, err)
	}
	return uc, nil
}

// trustServer returns an error naming the server's uid unless it is self
// or root.
func trustServer(uid, self int) error {
	if uid == self || uid == 0 {
		return nil
	}
	return fmt.Errorf("%w: uid %d, not uid %d or root; refusing to talk to it", ErrUntrustedServer, uid, self)
}

func writeRequest(c net.Conn, req Request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = c.Write(append(b, '\n'))
	return err
}

// readLine reads one line, without its "\n", of at most MaxResponseLine
// bytes. EOF before any byte is io.EOF; EOF within a line is
// io.ErrUnexpectedEOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(line) > MaxResponseLine {
				return nil, fmt.Errorf("line longer than %d bytes", MaxResponseLine)
			}
		case err == io.EOF && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

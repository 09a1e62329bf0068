package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// httpGet sends one GET over a fresh connection (Connection: close, so in
// rr mode every call is a new handoff) and returns status and body.
func httpGet(ctx context.Context, port int, path string, timeout time.Duration) (int, []byte, error) {
	return httpGetAfter(ctx, port, path, timeout, "")
}

// httpGetAfter is httpGet on a connection that first sends preface: the
// PROXY header a server behind a load balancer requires.
func httpGetAfter(ctx context.Context, port int, path string, timeout time.Duration, preface string) (int, []byte, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr(port))
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "%sGET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", preface, path, addr(port)); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, err
}

// getPID asks the server which worker answered.
func getPID(ctx context.Context, port int, timeout time.Duration) (int, error) {
	code, body, err := httpGet(ctx, port, "/pid", timeout)
	if err != nil {
		return 0, err
	}
	if code != 200 {
		return 0, fmt.Errorf("bench: GET /pid: status %d", code)
	}
	return strconv.Atoi(strings.TrimSpace(string(body)))
}

// pollResult is what pollPIDs saw.
type pollResult struct {
	at      time.Time // when the last wanted pid answered
	pids    map[int]bool
	refused int // connection refused: nothing listening yet
	failed  int // other failures: reset, EOF, timeout, bad status
}

// pollPIDs sends GET /pid back to back until want distinct pids outside
// exclude have answered, or ctx ends. Between failures it sleeps 100µs, so
// the poll's own resolution is well under the quantities measured. A
// request that gets no answer within timeout counts as failed: the wait
// shows in the result, so keep timeout short where connections can be lost.
func pollPIDs(ctx context.Context, port, want int, exclude map[int]bool, timeout time.Duration) (pollResult, error) {
	r := pollResult{pids: map[int]bool{}}
	for {
		if ctx.Err() != nil {
			return r, fmt.Errorf("bench: %d of %d pids answered: %w", len(r.pids), want, ctx.Err())
		}
		pid, err := getPID(ctx, port, timeout)
		switch {
		case err == nil:
			if !exclude[pid] {
				r.pids[pid] = true
				if len(r.pids) >= want {
					r.at = time.Now()
					return r, nil
				}
			}
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			r.refused++
		default:
			r.failed++
		}
		time.Sleep(100 * time.Microsecond)
	}
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proxyproto"
)

// proxyServer is an HTTP server that wants a PROXY header at the start of
// every connection and nowhere else, and counts what it got.
type proxyServer struct {
	ln    net.Listener
	close bool // answer with Connection: close
	wg    sync.WaitGroup

	mu       sync.Mutex
	clients  map[string]bool // addresses the headers named
	headed   int             // connections that started with a header
	silent   int             // connections that sent nothing
	noHeader int             // connections that started with something else
	misplace int             // requests after the first line that were not HTTP (a header)
	requests int
}

func startProxyServer(t *testing.T, close bool) *proxyServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &proxyServer{ln: ln, close: close, clients: map[string]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *proxyServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *proxyServer) count(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *proxyServer) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if line == "" && err != nil {
		s.count(func() { s.silent++ })
		return
	}
	_, src, err := proxyproto.Parse([]byte(line))
	if err != nil {
		s.count(func() { s.noHeader++ })
		return
	}
	s.count(func() { s.headed++; s.clients[src.Addr().String()] = true })
	for {
		// The end of the connection (wrk resets those it closes with a
		// response unread) or the next request, which must not be a
		// PROXY header; a request that is not HTTP ends it too, and
		// wrk counts the error.
		next, err := br.Peek(len("PROXY "))
		if err != nil {
			return
		}
		if string(next) == "PROXY " {
			s.count(func() { s.misplace++ })
			return
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		s.count(func() { s.requests++ })
		hdr := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
		if s.close {
			hdr += "Connection: close\r\n"
		}
		if _, err := io.WriteString(c, hdr+"\r\nok"); err != nil || s.close {
			return
		}
	}
}

// TestProxyScript runs wrk with bench/proxy.lua, as the load table does
// (two threads), against a server that checks where the headers are: each
// connection's first bytes, never a later request, keep-alive and close.
func TestProxyScript(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk not found: make test-deps installs it")
	}
	const conns = 8
	pl := placement{"unpinned", false}
	for _, ld := range loads {
		t.Run(ld.name, func(t *testing.T) {
			s := startProxyServer(t, ld.close)
			url := fmt.Sprintf("http://%s/health", addr(s.port()))
			argv := proxyArgs(withScript(wrkArgs(url, pl, ld, conns, time.Second), "proxy.lua"), ld, conns, wrkThreads(pl))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", joinArgs(argv), err, out)
			}
			res, err := parseWrk(string(out))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if res.errors() > 0 {
				t.Errorf("wrk saw %d errors\n%s", res.errors(), out)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.noHeader > 0 || s.misplace > 0 {
				t.Errorf("%d connections without a header first, %d requests that were a header", s.noHeader, s.misplace)
			}
			// wrk's own probe connection sends nothing; with close, so
			// may each connection open when it stops.
			if ld.close && s.silent > 1+conns || !ld.close && s.silent > 1 {
				t.Errorf("%d connections sent nothing", s.silent)
			}
			if !ld.close {
				if s.headed != conns || len(s.clients) != conns {
					t.Errorf("keep-alive: %d connections with a header naming %d clients, want %d and %d", s.headed, len(s.clients), conns, conns)
				}
				return
			}
			// Close: one connection per request, the clients in turn.
			if s.headed < s.requests || s.requests < 1024 {
				t.Fatalf("close: %d connections with a header for %d requests (want ≥ 1024 requests)", s.headed, s.requests)
			}
			if len(s.clients) != 512 {
				t.Errorf("close: headers named %d clients, want 512", len(s.clients))
			}
		})
	}
}

func TestCheckProxy(t *testing.T) {
	keep, closed := loads[0], loads[1]
	ok := wrkResult{requests: 5000}
	at := func(placed, rejected uint64) proxyCounts {
		return proxyCounts{placed: 100 + placed, rejected: 7 + rejected}
	}
	for _, c := range []struct {
		name      string
		ld        wrkLoad
		res       wrkResult
		after     proxyCounts
		wantError bool
	}{
		{"keep-alive, one connection each and wrk's probe", keep, ok, at(64, 1), false},
		{"keep-alive, idle connections rebalanced", keep, ok, at(96, 0), false},
		{"keep-alive, a reconnect", keep, ok, at(65, 2), true},
		{"keep-alive, wrk errors", keep, wrkResult{requests: 5000, sockErrs: 1}, at(64, 1), true},
		{"close, every request its connection", closed, ok, at(5060, 65), false},
		{"close, the warm-up's unused connections too", closed, ok, at(5000, 130), false},
		{"close, headers refused", closed, ok, at(5000, 131), true},
		{"close, fewer connections than requests", closed, ok, at(4999, 0), true},
		{"close, a 400", closed, wrkResult{requests: 5000, non2xx: 1}, at(5000, 0), true},
	} {
		err := checkProxy(at(0, 0), c.after, c.res, c.ld, 64)
		if (err != nil) != c.wantError {
			t.Errorf("%s: checkProxy = %v, want error %v", c.name, err, c.wantError)
		}
	}
	if !strings.Contains(fmt.Sprint(checkProxy(at(0, 0), at(65, 2), ok, keep, 64)), "reconnected") {
		t.Error("a keep-alive reconnect is not named as one")
	}
}

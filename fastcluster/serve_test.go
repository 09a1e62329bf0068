package fastcluster

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/prefork/prefork/cluster"
)

// TestServeStopsGracefullyOnSIGTERM: run standalone, Serve takes SIGTERM
// as the stop signal, answers the request in progress with
// "Connection: close", and returns nil.
func TestServeStopsGracefullyOnSIGTERM(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			started <- struct{}{}
			<-release
			ctx.WriteString("done")
			return
		}
		ctx.WriteString("ok")
	}
	ln, err := cluster.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- Serve(&fasthttp.Server{Handler: h}, ln) }()
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url + "/ok")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	type answer struct {
		body  string
		close bool
		err   error
	}
	slow := make(chan answer, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err != nil {
			slow <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- answer{string(b), resp.Close, err}
	}()
	<-started
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The stop has begun once the listener is closed: only then let the
	// request in progress finish.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting 10s after SIGTERM")
		}
	}
	close(release)
	if have := <-slow; have.err != nil || have.body != "done" || !have.close {
		t.Errorf("request in progress at SIGTERM: body %q, Connection: close %v, error %v; want done, true, nil",
			have.body, have.close, have.err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after SIGTERM")
	}
}

func TestHealthCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    fasthttp.RequestHandler
		want string // "" for no error, else a part of it
	}{
		{"ok", func(ctx *fasthttp.RequestCtx) {
			if !ctx.IsGet() || string(ctx.Path()) != "/health" {
				ctx.SetStatusCode(fasthttp.StatusNotFound)
			}
		}, ""},
		{"status", func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusServiceUnavailable) }, "status 503"},
		{"panic", func(*fasthttp.RequestCtx) { panic("boom") }, "panicked: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := HealthCheck(tc.h, "/health")()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want no error, have %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want an error with %q, have %v", tc.want, err)
			}
		})
	}
}

// flaky is a listener whose Accept fails with errs in turn, then blocks
// until closed.
type flaky struct {
	net.Listener
	errs []error
}

func (l *flaky) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return nil, net.ErrClosed
}

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

// An accept error the listener calls temporary (cluster's, out of
// descriptors) is retried; any other ends Accept, as fasthttp expects.
func TestRetryingAccept(t *testing.T) {
	l := retrying{&flaky{errs: []error{tempErr{}, tempErr{}}}}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept: want net.ErrClosed after the temporary errors, have %v", err)
	}
	boom := errors.New("boom")
	l = retrying{&flaky{errs: []error{boom}}}
	if _, err := l.Accept(); err != boom {
		t.Fatalf("Accept: want %v, have %v", boom, err)
	}
}

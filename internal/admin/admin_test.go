package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// fakeSupervisor answers control requests and remembers the actions.
type fakeSupervisor struct {
	mu   sync.Mutex
	done []control.Request
}

func (f *fakeSupervisor) Do(ctx context.Context, req control.Request) control.Response {
	if req.Cmd == control.CmdStatus {
		return control.Response{OK: true, Status: &control.Status{PID: 42, Mode: "rr", Generation: 3,
			Workers: []control.WorkerStatus{{Slot: 1, PID: 43, State: control.StateReady, P99S: 0.002}}}}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done = append(f.done, req)
	return control.Response{OK: true, Message: string(req.Cmd) + ": done"}
}

func (f *fakeSupervisor) actions() []control.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]control.Request(nil), f.done...)
}

type fixture struct {
	srv  *Server
	sup  *fakeSupervisor
	bus  *control.Broadcaster
	base string
}

func start(t *testing.T, o Options) *fixture {
	t.Helper()
	f := &fixture{sup: &fakeSupervisor{}, bus: &control.Broadcaster{}}
	o.Control, o.Events = f.sup, f.bus
	o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "prefork_up 1\n") })
	srv, err := Serve("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	f.srv, f.base = srv, "http://"+srv.Addr()
	return f
}

var client = &http.Client{Timeout: 10 * time.Second}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var tokenRE = regexp.MustCompile(`name="prefork-token" content="([0-9a-f]*)"`)

// pageToken is the token the dashboard page embeds.
func (f *fixture) pageToken(t *testing.T) string {
	t.Helper()
	code, body := get(t, f.base+"/")
	if code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	m := tokenRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no token meta tag in the page:\n%s", body)
	}
	return m[1]
}

func (f *fixture) post(t *testing.T, path, body string, header ...string) (int, control.Response) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r control.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, r
}

func TestPageStatusMetrics(t *testing.T) {
	f := start(t, Options{})
	code, body := get(t, f.base+"/")
	if code != http.StatusOK || !strings.Contains(body, `content="off"`) || !strings.Contains(body, `/assets/app.js`) {
		t.Fatalf("GET /: %d\n%s", code, body)
	}
	if m := tokenRE.FindStringSubmatch(body); m == nil || m[1] != "" {
		t.Fatalf("page without actions embeds a token: %v", m)
	}
	for _, asset := range []string{"/assets/app.js", "/assets/style.css"} {
		if code, body := get(t, f.base+asset); code != http.StatusOK || len(body) < 100 {
			t.Errorf("GET %s: %d, %d bytes", asset, code, len(body))
		}
	}
	code, body = get(t, f.base+"/api/status")
	var st control.Status
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || st.Generation != 3 || st.Workers[0].P99S != 0.002 {
		t.Fatalf("GET /api/status: %d %v %s", code, err, body)
	}
	if code, body := get(t, f.base+"/metrics"); code != http.StatusOK || body != "prefork_up 1\n" {
		t.Fatalf("GET /metrics: %d %q", code, body)
	}
}

// Without -admin-actions, the actions are refused even with a token and
// from the page's own origin.
func TestActionsOff(t *testing.T) {
	f := start(t, Options{})
	for _, path := range []string{"/api/reload", "/api/scale"} {
		code, r := f.post(t, path, `{"n":2}`, "Sec-Fetch-Site", "same-origin", TokenHeader, f.srv.api.token)
		if code != http.StatusForbidden || r.OK || !strings.Contains(r.Error, "-admin-actions") {
			t.Errorf("POST %s: %d %+v, want 403 naming -admin-actions", path, code, r)
		}
	}
	if a := f.sup.actions(); len(a) != 0 {
		t.Fatalf("supervisor was asked %v", a)
	}
}

func TestActions(t *testing.T) {
	f := start(t, Options{Actions: true})
	token := f.pageToken(t)
	if code, r := f.post(t, "/api/reload", `{}`, "Sec-Fetch-Site", "same-origin", TokenHeader, token); code != http.StatusOK || !r.OK {
		t.Fatalf("reload: %d %+v", code, r)
	}
	// No browser headers at all (curl) passes with the token.
	if code, r := f.post(t, "/api/scale", `{"n":3}`, TokenHeader, token); code != http.StatusOK || !r.OK {
		t.Fatalf("scale: %d %+v", code, r)
	}
	if code, r := f.post(t, "/api/scale", `{"n":0}`, TokenHeader, token); code != http.StatusBadRequest || r.OK {
		t.Fatalf("scale 0: %d %+v, want 400", code, r)
	}
	if code, _ := f.post(t, "/api/scale", `{"n":"x"}`, TokenHeader, token); code != http.StatusBadRequest {
		t.Fatalf("scale with a bad body: %d, want 400", code)
	}
	want := []control.Request{{Cmd: control.CmdReload}, {Cmd: control.CmdScale, N: 3}}
	if have := f.sup.actions(); len(have) != 2 || have[0] != want[0] || have[1] != want[1] {
		t.Fatalf("supervisor was asked %v, want %v", have, want)
	}
}

// A page on another site can make the browser send a POST, with the
// operator's network position; it is refused.
func TestActionsRefuseCrossSite(t *testing.T) {
	f := start(t, Options{Actions: true})
	token := f.pageToken(t)
	for _, tc := range []struct {
		name   string
		header []string
	}{
		{"no token", []string{"Sec-Fetch-Site", "same-origin"}},
		{"wrong token", []string{"Sec-Fetch-Site", "same-origin", TokenHeader, strings.Repeat("0", len(token))}},
		{"cross-site fetch", []string{"Sec-Fetch-Site", "cross-site", TokenHeader, token}},
		{"same-site, other origin", []string{"Sec-Fetch-Site", "same-site", TokenHeader, token}},
		{"foreign origin", []string{"Origin", "http://evil.example", TokenHeader, token}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/reload", "/api/scale"} {
				if code, r := f.post(t, path, `{"n":2}`, tc.header...); code != http.StatusForbidden || r.OK {
					t.Errorf("POST %s: %d %+v, want 403", path, code, r)
				}
			}
		})
	}
	if a := f.sup.actions(); len(a) != 0 {
		t.Fatalf("supervisor was asked %v", a)
	}
	// A GET does not act.
	if code, _ := get(t, f.base+"/api/reload"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/reload: %d, want 405", code)
	}
}

// events connects to the event stream and returns a reader past the
// response headers and the retry line.
func (f *fixture) events(t *testing.T) (*bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", f.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/events: %s %v", resp.Status, resp.Header)
	}
	body := bufio.NewReader(resp.Body) // chunked
	if line, err := body.ReadString('\n'); line != "retry: 1000\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	waitFor(t, "the stream to subscribe", func() bool { return f.srv.Clients() == 1 })
	return body, c
}

func TestEventStream(t *testing.T) {
	f := start(t, Options{})
	body, _ := f.events(t)
	f.bus.Publish(control.Event{Kind: control.EventFork, Slot: 1, PID: 99})
	f.bus.Publish(control.Event{Kind: control.EventExit, Slot: 1, PID: 99, Reason: control.CauseCrash})
	var got []control.Event
	for len(got) < 2 {
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (got %v)", err, got)
		}
		data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
		if !ok {
			continue // blank separators
		}
		var e control.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		got = append(got, e)
	}
	if got[0].Kind != control.EventFork || got[1].Kind != control.EventExit || got[1].Reason != control.CauseCrash || got[1].PID != 99 || got[0].Time == "" {
		t.Fatalf("events %v", got)
	}
}

// A client that stops reading is disconnected, whether more than
// maxClientBytes wait in its queue (its handler is stuck in a write) or
// its socket stops taking writes, and the publisher never waits for it.
func TestSlowEventClientDropped(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int  // bytes of padding of each event
		stuck bool // a queue no handler takes from
	}{
		{"behind its queue", 1 << 10, true},
		// Socket buffers on loopback take megabytes: only the write
		// timeout can drop it.
		{"not reading", maxEventBytes - 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, Options{WriteTimeout: 200 * time.Millisecond})
			h := f.srv.api.hub
			var c *streamClient
			if tc.stuck {
				c = h.join(0)
			} else {
				f.events(t) // and never read again
			}
			pad := strings.Repeat("x", tc.size)
			begun := time.Now()
			for i := 0; h.clientCount() > 0; i++ {
				if i == 100_000 { // 400 MB: far more than any socket buffer
					t.Fatalf("client not dropped after %d events", i)
				}
				h.publish(control.Event{Kind: control.EventMessage, Seq: uint64(i), Msg: pad})
			}
			t.Logf("dropped after %v", time.Since(begun))
			if c != nil {
				select {
				case <-c.gone:
				default:
					t.Fatal("stuck client not told it is gone")
				}
			}
			waitFor(t, "the drop to be counted", func() bool { return f.srv.api.dropped.Load() == 1 })
			// A client that reads still gets events.
			body, _ := f.events(t)
			f.bus.Publish(control.Event{Kind: control.EventFork})
			for {
				line, err := body.ReadString('\n')
				if err != nil {
					t.Fatalf("read after a slow client was dropped: %v", err)
				}
				if strings.HasPrefix(line, "data: ") && strings.Contains(line, "fork") {
					break
				}
			}
		})
	}
}

// Close ends the event streams, which never end by themselves.
func TestCloseEndsStreams(t *testing.T) {
	f := start(t, Options{})
	body, _ := f.events(t)
	closed := make(chan error, 1)
	go func() { closed <- f.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while an event stream was open")
	}
	if _, err := io.ReadAll(body); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("stream after Close: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A page served under a name the operator never gave (DNS rebinding: an
// attacker's name resolving to 127.0.0.1) must not be readable, or a
// foreign page could read the token and act.
func TestRebindingRefused(t *testing.T) {
	f := start(t, Options{Actions: true})
	for _, tc := range []struct {
		host string
		want int
	}{
		{f.srv.Addr(), http.StatusOK},
		{"localhost", http.StatusOK},
		{"app.localhost:9", http.StatusOK},
		{"[::1]:80", http.StatusOK},
		{"evil.example", http.StatusMisdirectedRequest},
		{"evil.example:" + strings.Split(f.srv.Addr(), ":")[1], http.StatusMisdirectedRequest},
	} {
		for _, path := range []string{"/", "/api/status", "/api/events"} {
			req, _ := http.NewRequest("GET", f.base+path, nil)
			req.Host = tc.host
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := client.Do(req.WithContext(ctx))
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			resp.Body.Close()
			cancel()
			if resp.StatusCode != tc.want {
				t.Errorf("Host %q, GET %s: %d, want %d", tc.host, path, resp.StatusCode, tc.want)
			}
		}
	}
}

func TestAllowedHost(t *testing.T) {
	hosts := allowedHosts("admin.internal:9100", "box1")
	for host, want := range map[string]bool{
		"admin.internal:9100": true, "ADMIN.internal": true, "box1:9100": true, "10.0.0.7:9100": true,
		"localhost:1": true, "x.localhost": true, "evil.example": false, "": false, "box1.evil.example": false,
	} {
		if got := hosts.allow(host); got != want {
			t.Errorf("allow(%q) = %v, want %v", host, got, want)
		}
	}
}

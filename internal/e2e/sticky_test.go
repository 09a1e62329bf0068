package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/demo"
	"github.com/prefork/prefork/internal/proctest"
	"github.com/prefork/prefork/internal/sticky"
)

// health asks /health on a new connection with a cookie.
func (s *sup) healthWith(cookie string) (demo.Health, error) {
	req, _ := http.NewRequest("GET", s.url("/health"), nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	var h demo.Health
	resp, err := s.client.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h, err
}

// slotsOf sends n requests spread over keys, from 8 clients at once, each
// on a new connection, and returns each key's slots as seen.
func (s *sup) slotsOf(t *testing.T, keys []string, n int) map[string]map[int]int {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				k := keys[int(i)%len(keys)]
				h, err := s.healthWith("theme=dark; sid=" + k)
				if err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				if seen[k] == nil {
					seen[k] = map[int]int{}
				}
				seen[k][h.Slot]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	return seen
}

// oneSlot is the slot of each key; it fails the test if a key was seen on
// two.
func oneSlot(t *testing.T, seen map[string]map[int]int, when string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for k, slots := range seen {
		if len(slots) != 1 {
			t.Fatalf("%s: key %s on slots %v", when, k, slots)
		}
		for s := range slots {
			out[k] = s
		}
	}
	return out
}

// One supervisor, 4 demo workers, -sticky cookie:sid: each of 50 cookies
// stays on one slot over 1,000 new connections; after kill -9 of a slot's
// worker its keys wait and come back to that slot; a reload under load
// keeps every key; a key a worker claimed goes to its slot whatever the
// hash; scaling 4 → 5 moves at most 30% of keys.
func TestStickyCookie(t *testing.T) {
	s := startReady(t, "-workers", "4", "-sticky", "cookie:sid", "-sticky-hold", "10s")
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	where := oneSlot(t, s.slotsOf(t, keys, 1000), "1,000 requests")
	used := map[int]bool{}
	for _, slot := range where {
		used[slot] = true
	}
	if len(used) != 4 {
		t.Fatalf("50 keys used slots %v, want all 4", used)
	}

	// kill -9 the worker of user-0's slot; its requests wait for the
	// slot's next worker.
	slot := where["user-0"]
	var victim int
	for _, w := range s.status().Workers {
		if w.Slot == slot {
			victim = w.PID
		}
	}
	from := s.events.Count()
	syscall.Kill(victim, syscall.SIGKILL)
	after := oneSlot(t, s.slotsOf(t, []string{"user-0"}, 5), "after kill -9")
	if after["user-0"] != slot {
		t.Fatalf("after kill -9 of slot %d's worker, user-0 went to slot %d", slot, after["user-0"])
	}
	s.waitEvent(5*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Pos >= from })

	// A reload under load keeps every key where it was.
	stop := make(chan struct{})
	var moved, served atomic.Int64
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; ; i += 4 {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[i%len(keys)]
				if h, err := s.healthWith("sid=" + k); err == nil {
					served.Add(1)
					if h.Slot != where[k] {
						moved.Add(1)
					}
				}
			}
		}()
	}
	// And a keep-alive client: a draining worker hands its idle
	// connection back, and the slot's new worker takes it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		ka := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("GET", s.url("/health"), nil)
			req.Header.Set("Cookie", "sid=user-7")
			resp, err := ka.Do(req)
			if err != nil {
				continue
			}
			var h demo.Health
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			served.Add(1)
			if h.Slot != where["user-7"] {
				moved.Add(1)
			}
		}
	}()
	if out, code := s.ctl("reload"); code != 0 {
		t.Fatalf("reload: %s", out)
	}
	close(stop)
	wg.Wait()
	if moved.Load() != 0 || served.Load() < 50 {
		t.Fatalf("during a reload %d of %d requests went to another slot than their key's", moved.Load(), served.Load())
	}

	// A worker's claim beats the hash: /session makes up an id, claims it.
	slotIDs := []int{1, 2, 3, 4}
	beaten := 0
	claims := map[string]int{}
	for range 8 {
		resp, err := s.client.Get(s.url("/session"))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/session: %v %v", resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		claimed, _ := strconv.Atoi(string(body))
		id := ""
		for _, c := range resp.Cookies() {
			if c.Name == "sid" {
				id = c.Value
			}
		}
		if hashed, _ := sticky.Pick(id, slotIDs); hashed != claimed {
			beaten++
		}
		claims[id] = claimed
		for range 3 {
			if h, err := s.healthWith("sid=" + id); err != nil || h.Slot != claimed {
				t.Fatalf("claimed id %s: slot %d, %v; want %d", id, h.Slot, err, claimed)
			}
		}
	}
	if beaten == 0 {
		t.Fatal("no claimed id of 8 was one the hash would have put elsewhere: the claims were not tested")
	}
	// An in-place upgrade keeps the claims, and every key where it was.
	if out, code := s.ctl("upgrade"); code != 0 {
		t.Fatalf("ctl upgrade: %s", out)
	}
	for id, claimed := range claims {
		if h, err := s.healthWith("sid=" + id); err != nil || h.Slot != claimed {
			t.Fatalf("after an upgrade, claimed id %s: slot %d, %v; want %d", id, h.Slot, err, claimed)
		}
	}
	for k, slot := range oneSlot(t, s.slotsOf(t, keys[:10], 10), "after an upgrade") {
		if slot != where[k] {
			t.Fatalf("after an upgrade key %s went to slot %d, not %d", k, slot, where[k])
		}
	}
	st, _ := s.ctl("status")
	if !strings.Contains(st, "sticky key=cookie:sid claimed_keys=") || !strings.Contains(st, "sticky slots 1:keys=") {
		t.Fatalf("ctl status shows no sticky figures:\n%s", st)
	}

	if out, code := s.ctl("scale", "5"); code != 0 {
		t.Fatalf("scale 5: %s", out)
	}
	proctest.Eventually(t, 15*time.Second, "5 ready workers", func() bool { return len(s.status().pids("ready")) == 5 })
	now := oneSlot(t, s.slotsOf(t, keys, 100), "after scale 4 → 5")
	n := 0
	for k, slot := range now {
		if slot != where[k] {
			n++
			if slot != 5 {
				t.Errorf("key %s moved from slot %d to %d, not to the new slot", k, where[k], slot)
			}
		}
	}
	t.Logf("scale 4 → 5 moved %d of %d keys", n, len(keys))
	if n > len(keys)*30/100 {
		t.Fatalf("scale 4 → 5 moved %d of %d keys, more than 30%%", n, len(keys))
	}
}

// proxyV1 and proxyV2 are PROXY headers for a TCP4 client ip:port.
func proxyV1(ip string, port int) string {
	return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 %d 80\r\n", ip, port)
}

func proxyV2(ip string, port int) string {
	a := net.ParseIP(ip).To4()
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	b = append(b, a...)
	b = append(b, 127, 0, 0, 1, byte(port>>8), byte(port), 0, 80)
	return string(b)
}

// rawHealth sends prefix then a GET /health on a new connection from local
// (nil: any) and decodes the answer; an error if the connection closed.
func rawHealth(addr string, local net.Addr, prefix string) (demo.Health, error) {
	var h demo.Health
	d := net.Dialer{LocalAddr: local, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return h, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, prefix+"GET /health HTTP/1.0\r\n\r\n"); err != nil {
		return h, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h, err
}

// -sticky ip behind a load balancer sending PROXY v1 and v2 headers: the
// key and the worker's RemoteAddr are the header's client; a source
// outside -proxy-from, a malformed, truncated or slow header close only
// their connection, and are counted.
func TestStickyIPBehindProxy(t *testing.T) {
	s := startReady(t, "-workers", "3", "-sticky", "ip", "-proxy-protocol", "-proxy-from", "127.0.0.1/32", "-proxy-wait", "500ms")
	slots := map[int]bool{}
	for i := range 12 {
		ip := fmt.Sprintf("192.0.2.%d", i+1)
		h1, err := rawHealth(s.addr, nil, proxyV1(ip, 1000+i))
		if err != nil {
			t.Fatalf("v1 %s: %v", ip, err)
		}
		h2, err := rawHealth(s.addr, nil, proxyV2(ip, 2000+i))
		if err != nil {
			t.Fatalf("v2 %s: %v", ip, err)
		}
		if h1.Slot != h2.Slot || h1.Client != fmt.Sprintf("%s:%d", ip, 1000+i) || h2.Client != fmt.Sprintf("%s:%d", ip, 2000+i) {
			t.Fatalf("client %s: v1 slot %d as %s, v2 slot %d as %s", ip, h1.Slot, h1.Client, h2.Slot, h2.Client)
		}
		slots[h1.Slot] = true
	}
	if len(slots) < 2 {
		t.Fatalf("12 clients all on slots %v", slots)
	}
	// Refused: an untrusted source (127.0.0.2 is outside 127.0.0.1/32),
	// no header, a malformed one, a truncated one.
	untrusted := &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}
	if _, err := rawHealth(s.addr, untrusted, proxyV1("192.0.2.1", 1)); err == nil {
		t.Fatal("a header from an untrusted source was served")
	}
	for _, bad := range []string{"", "PROXY TCP4 192.0.2.1 nonsense\r\n"} {
		if _, err := rawHealth(s.addr, nil, bad); err == nil {
			t.Fatalf("header %q was served", bad)
		}
	}
	cut, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(cut, proxyV2("192.0.2.1", 1)[:20])
	cut.(*net.TCPConn).CloseWrite()
	cut.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := cut.Read(make([]byte, 1)); err == nil || errors_is_timeout(err) {
		t.Fatalf("truncated header: read %d, %v; want the connection closed", n, err)
	}
	cut.Close()
	// A slow header closes its own connection after -proxy-wait; a good
	// client meanwhile is served.
	slow, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "PROXY TCP4 192.0")
	t0 := time.Now()
	if _, err := rawHealth(s.addr, nil, proxyV1("192.0.2.9", 9)); err != nil {
		t.Fatalf("a good client behind a slow one: %v", err)
	}
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := slow.Read(make([]byte, 1)); err == nil || errors_is_timeout(err) {
		t.Fatalf("slow header: %v, want the connection closed", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("slow header closed after %v, want about -proxy-wait (500ms)", d)
	}
	var out string
	proctest.Eventually(t, 3*time.Second, "ctl status counts 5 PROXY rejections", func() bool {
		out, _ = s.ctl("status")
		return strings.Contains(out, "proxy_rejected=5")
	})
}

func errors_is_timeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// In shared and reuseport mode the workers accept, and package cluster's
// listener reads the PROXY header: RemoteAddr is the header's client, and
// a bad or untrusted header closes the connection.
func TestProxyHeaderInWorkers(t *testing.T) {
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-mode", mode, "-workers", "2", "-proxy-protocol", "-proxy-from", "127.0.0.1", "-proxy-wait", "500ms")
			for i, hdr := range []string{proxyV1("192.0.2.7", 4007), proxyV2("192.0.2.8", 4008)} {
				h, err := rawHealth(s.addr, nil, hdr)
				if want := fmt.Sprintf("192.0.2.%d:%d", 7+i, 4007+i); err != nil || h.Client != want {
					t.Fatalf("header %d: client %q, %v; want %s", i, h.Client, err, want)
				}
			}
			untrusted := &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}
			if _, err := rawHealth(s.addr, untrusted, proxyV1("192.0.2.1", 1)); err == nil {
				t.Fatal("a header from an untrusted source was served")
			}
			if _, err := rawHealth(s.addr, nil, "PROXY TCP4 junk\r\n"); err == nil {
				t.Fatal("a malformed header was served")
			}
		})
	}
}

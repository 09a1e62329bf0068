package chaos

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestStickySilentClients: 1,000 clients connect and send nothing, and
// 1,000 more send the start of a request and stop, to a supervisor that
// must read each connection's first bytes before it picks a worker (a
// -sticky cookie key, a PROXY header). The silent ones wait in the kernel
// (TCP_DEFER_ACCEPT), the others in the peeker, off the accept loop: a
// good client meanwhile is not delayed by more than 10ms.
func TestStickySilentClients(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		prefix  string
		partial string // the start a stalled client sends
	}{
		{"cookie", []string{"-sticky", "cookie:sid", "-sticky-wait", "10s"}, "", "GET / HTTP/1.1\r\n"},
		{"proxy", []string{"-sticky", "ip", "-proxy-protocol", "-proxy-wait", "10s"}, "PROXY TCP4 192.0.2.1 127.0.0.1 4000 80\r\n", "PROXY TCP4 "},
	} {
		c2 := c
		t.Run(c.name, func(t *testing.T) {
			s := start(t, opts{mode: "rr", workers: 2, args: c.args})
			good := func() time.Duration {
				t0 := time.Now()
				conn, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(conn, c.prefix+"GET /pid HTTP/1.1\r\nHost: x\r\nCookie: sid=good\r\nConnection: close\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("good client: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return time.Since(t0)
			}
			median := func(n int) (time.Duration, time.Duration) {
				ds := make([]time.Duration, n)
				for i := range ds {
					ds[i] = good()
				}
				slices.Sort(ds)
				return ds[n/2], ds[n-1]
			}
			before, _ := median(31)
			idle, dialFailed := dialIdle(s.addr, 1000)
			stalled, stallFailed := dialIdle(s.addr, 1000)
			dialFailed += stallFailed
			defer func() {
				for _, c := range append(idle, stalled...) {
					c.Close()
				}
			}()
			for _, c := range stalled {
				io.WriteString(c, c2.partial)
			}
			// The stalled ones wait for the rest of their first bytes, off
			// the accept loop.
			proctest.Eventually(t, 5*time.Second, "the stalled clients peeking", func() bool {
				st, _, err := s.status(5 * time.Second)
				return err == nil && st.Sticky != nil && st.Sticky.Peeking >= len(stalled)
			})
			during, worst := median(31)
			ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }
			figure(t, "sticky-silent-"+c.name, "rr", "silent", len(idle), "stalled", len(stalled), "dial_failed", dialFailed,
				"good_p50_before", ms(before), "good_p50_during", ms(during), "good_max_during", ms(worst))
			if dialFailed > 0 {
				t.Errorf("%d of 2,000 silent and stalled clients could not connect", dialFailed)
			}
			if during-before > 10*time.Millisecond {
				t.Fatalf("1,000 silent clients delayed a good one: median %v, %v before", during, before)
			}
		})
	}
}

package chaos

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// TestControlAbuse attacks the control socket while reloads run: event
// subscribers that never read, hundreds of garbage clients and a line of
// tens of megabytes without a newline. Status must answer within a second
// throughout, the reloads complete, and nothing exits.
func TestControlAbuse(t *testing.T) {
	eachMode(t, controlAbuse)
}

func controlAbuse(t *testing.T, mode string) {
	const workers = 2
	subscribers := pick(24, 48)
	garbage := pick(200, 600)
	bigLine := pick(8, 50) << 20
	reloads := pick(3, 10)
	attack := pick(2*time.Second, 10*time.Second)
	s := start(t, opts{mode: mode, workers: workers})
	before := s.count(`"msg":"spawned worker"`)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Subscribers that never read: the supervisor's writes to them fill
	// their socket buffers.
	var held []net.Conn
	for range subscribers {
		c, err := net.DialTimeout("unix", s.ctlPath, time.Second)
		if err != nil {
			t.Fatalf("subscriber: %v", err)
		}
		defer c.Close()
		c.Write([]byte(`{"cmd":"events"}` + "\n"))
		held = append(held, c)
	}
	// Garbage clients, 20 at a time until the attack ends (at most ten
	// times garbage): junk with and without a newline, half of them held
	// open for a while.
	var sent atomic.Int64
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			junk := bytes.Repeat([]byte{0xff, '{', 'x', 0}, 16)
			for i := g; i < 10*garbage; i += 20 {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("unix", s.ctlPath, time.Second)
				if err != nil {
					continue // refused while the backlog is full: that is the attack working
				}
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if i%2 == 0 {
					c.Write(append(junk, '\n'))
					c.Read(make([]byte, 512))
				} else {
					c.Write(junk)
					select { // held until the read deadline or the end
					case <-stop:
					case <-time.After(500 * time.Millisecond):
					}
				}
				c.Close()
				sent.Add(1)
			}
		}()
	}
	// One line of tens of megabytes and no newline.
	var bigErr error
	var bigSent int
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := net.DialTimeout("unix", s.ctlPath, time.Second)
		if err != nil {
			bigErr = err
			return
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		chunk := bytes.Repeat([]byte("a"), 1<<20)
		for bigSent < bigLine {
			n, err := c.Write(chunk)
			bigSent += n
			if err != nil {
				return // the server closed it: expected
			}
		}
	}()

	watch := watchStatus(s)
	reloadErrs := 0
	var reloadMax time.Duration
	for range reloads {
		t0 := time.Now()
		if err := s.call(control.Request{Cmd: control.CmdReload}, 30*time.Second); err != nil {
			t.Errorf("reload during the attack: %v", err)
			reloadErrs++
		}
		reloadMax = max(reloadMax, time.Since(t0))
		pace(t0, attack/time.Duration(reloads)) // spread over the attack
	}
	close(stop)
	wg.Wait()
	slow, maxStatus := watch()
	for _, c := range held {
		c.Close()
	}
	s.waitSettled(workers, 10*time.Second)
	figure(t, "control-abuse", mode, "subscribers", subscribers, "garbage_clients", sent.Load(),
		"big_line_bytes_sent", bigSent, "reloads", reloads, "reload_errors", reloadErrs, "reload_max", reloadMax,
		"status_max", maxStatus, "status_over_1s", slow, "busy_refusals", s.count("refused connection: too many"))
	if bigErr != nil {
		t.Errorf("big line client: %v", bigErr)
	}
	if slow > 0 {
		t.Errorf("status took more than 1s (or failed) %d times during the attack, slowest %s", slow, maxStatus)
	}
	if n := s.count(`"msg":"spawned worker"`) - before; n != reloads*workers {
		t.Errorf("%d workers spawned for %d reloads of %d workers, want %d", n, reloads, workers, reloads*workers)
	}
	if n := s.count("worker exited unexpectedly"); n > 0 {
		t.Errorf("%d workers exited unexpectedly", n)
	}
	s.stop()
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The keep-alive table (-keepalive): keep-alive clients sending POSTs,
// which no client retries, while the server reloads. Two rows per server:
//
//   - race: kaClients clients, paced 2 ms, through 20 reloads and a scale
//     2 -> 4 -> 2 (where the server can scale): failed requests, and the
//     connections the clients had to open (kaClients at best);
//   - latency: the same clients unpaced for kaLatencyRun, with 10 reloads
//     spread over it: p99 and max of every request's latency, failures,
//     requests/s.
//
// Servers: prefork rr with hand-back (the default), prefork rr with
// -handback=false -rebalance=false (a drain closes idle keep-alive
// connections, as before), one Go process restarted behind a held socket
// (bench/sdsocket: systemctl restart of a socket-activated service), and
// Node's cluster reload pattern (bench/node/reload.js: fork, wait for
// listening, disconnect the old worker).

const (
	kaClients    = 64
	kaReloads    = 20
	kaLatReloads = 10
	kaLatencyRun = 5 * time.Second
	kaStepWait   = 30 * time.Second // bound on one reload or scale
)

// kaServer is a server of the keep-alive table and how it reloads and
// scales.
type kaServer struct {
	spec   serverSpec
	reload func(ctx context.Context, s *server) error
	scale  func(ctx context.Context, s *server, from, to int) error // nil: cannot
}

func kaServers(root string) []kaServer {
	sup := filepath.Join(root, "bin", "supervisor")
	ctl := func(ctx context.Context, s *server, args ...string) error {
		ctx, cancel := context.WithTimeout(ctx, kaStepWait)
		defer cancel()
		out, err := exec.CommandContext(ctx, sup, append([]string{"ctl", "-listen", addr(s.port)}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("bench: ctl %v: %v: %s", args, err, out)
		}
		return nil
	}
	prefork := func(name string, flags ...string) kaServer {
		return kaServer{
			spec: serverSpec{name: name, procs: 2, logged: true, command: func(port int) []string {
				return append([]string{sup, "-listen", addr(port), "-workers", "2", "-mode", "rr",
					"-grace", "10s", "-log-format", "json"}, flags...)
			}},
			reload: func(ctx context.Context, s *server) error { return ctl(ctx, s, "reload") },
			scale: func(ctx context.Context, s *server, _, to int) error {
				return ctl(ctx, s, "scale", itoa(to))
			},
		}
	}
	// signalled: send sig, wait for the line msg.
	signalled := func(ctx context.Context, s *server, sig syscall.Signal, msg string) (logEvent, error) {
		ctx, cancel := context.WithTimeout(ctx, kaStepWait)
		defer cancel()
		from := s.log.len()
		if err := syscall.Kill(s.pid(), sig); err != nil {
			return logEvent{}, err
		}
		e, _, err := s.log.wait(ctx, from, s.done, func(e logEvent) bool { return e.msg() == msg })
		return e, err
	}
	node := kaServer{
		spec: serverSpec{name: "node-cluster", procs: 2, logged: true, command: func(port int) []string {
			return []string{"node", filepath.Join(root, "bench", "node", "reload.js"), itoa(port), "2"}
		}},
		reload: func(ctx context.Context, s *server) error {
			_, err := signalled(ctx, s, syscall.SIGHUP, "reload done")
			return err
		},
		scale: func(ctx context.Context, s *server, from, to int) error {
			sig := syscall.SIGTTIN
			if to < from {
				sig = syscall.SIGTTOU
			}
			for range max(to-from, from-to) {
				if _, err := signalled(ctx, s, sig, "scale done"); err != nil {
					return err
				}
			}
			return nil
		},
	}
	sd := kaServer{
		spec: serverSpec{name: "go-systemd", procs: 1, logged: true, command: func(port int) []string {
			return []string{filepath.Join(root, "bin", "sdsocket"), "-listen", addr(port)}
		}},
		// A restart is done once the new process answers (systemd's
		// Type=notify would wait for its READY=1).
		reload: func(ctx context.Context, s *server) error {
			e, err := signalled(ctx, s, syscall.SIGHUP, "restart done")
			if err != nil {
				return err
			}
			want := e.int("pid")
			for {
				pid, err := getPID(ctx, s.port, time.Second)
				if err == nil && pid == want {
					return nil
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(time.Millisecond)
			}
		},
	}
	return []kaServer{
		prefork("prefork-handback"),
		prefork("prefork-no-handback", "-handback=false", "-rebalance=false"),
		sd, node,
	}
}

// kaResult is one run of the keep-alive clients.
type kaResult struct {
	answered, failed, connects int64
	lat                        []time.Duration // every answered request's
	elapsed                    time.Duration
	firstErr                   string
}

func (r kaResult) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))]
}

// kaLoad runs kaClients keep-alive clients against port until stop is
// closed: each POSTs /submit on its connection, opens a new one only after
// a failure or a Connection: close, and never retries a request.
func kaLoad(port int, pace time.Duration, stop <-chan struct{}) kaResult {
	var res kaResult
	var answered, failed, connects atomic.Int64
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for range kaClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var c net.Conn
			var br *bufio.Reader
			fail := func(err error) {
				failed.Add(1)
				mu.Lock()
				if res.firstErr == "" {
					res.firstErr = err.Error()
				}
				mu.Unlock()
				if c != nil {
					c.Close()
					c = nil
				}
			}
			defer func() {
				if c != nil {
					c.Close()
				}
				mu.Lock()
				res.lat = append(res.lat, lat...)
				mu.Unlock()
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c == nil {
					connects.Add(1)
					var err error
					if c, err = net.DialTimeout("tcp", addr(port), 5*time.Second); err != nil {
						c = nil
						fail(err)
						continue
					}
					br = bufio.NewReader(c)
				}
				t0 := time.Now()
				closing, err := kaPost(c, br)
				if err != nil {
					fail(err)
					continue
				}
				lat = append(lat, time.Since(t0))
				answered.Add(1)
				if closing {
					c.Close()
					c = nil
				}
				if pace > 0 {
					time.Sleep(pace)
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.answered, res.failed, res.connects = answered.Load(), failed.Load(), connects.Load()
	slices.Sort(res.lat)
	return res
}

var kaRequest = []byte("POST /submit HTTP/1.1\r\nHost: bench\r\nContent-Length: 1\r\n\r\nx")

func kaPost(c net.Conn, br *bufio.Reader) (closing bool, err error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(kaRequest); err != nil {
		return false, err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	return res.Close, err
}

// kaRow is one server's runs: one race, reps latency runs.
type kaRow struct {
	name      string
	race      kaResult
	raceSteps string
	raceErr   error
	lat       []kaResult
	latErrs   []error
}

// runKeepAlive runs the race for each server, then the latency runs,
// reps of each, round-robin over the servers.
func runKeepAlive(ctx context.Context, root string, only map[string]bool, reps int, rep *report) []kaRow {
	var rows []*kaRow
	var servers []kaServer
	for _, ks := range kaServers(root) {
		if only != nil && !only[ks.spec.name] {
			continue
		}
		servers = append(servers, ks)
		row := &kaRow{name: ks.spec.name}
		row.race, row.raceSteps, row.raceErr = kaRun(ctx, ks, rep, true)
		rows = append(rows, row)
	}
	for range reps {
		for i, ks := range servers {
			r, _, err := kaRun(ctx, ks, rep, false)
			rows[i].lat = append(rows[i].lat, r)
			rows[i].latErrs = append(rows[i].latErrs, err)
		}
	}
	out := make([]kaRow, len(rows))
	for i, r := range rows {
		out[i] = *r
	}
	return out
}

// kaRun starts ks and runs the clients: race (paced, 20 reloads and a
// scale 2 -> 4 -> 2) or latency (unpaced, 10 reloads over kaLatencyRun).
func kaRun(ctx context.Context, ks kaServer, rep *report, race bool) (kaResult, string, error) {
	s, err := launch(ks.spec, false)
	if err != nil {
		return kaResult{}, "", err
	}
	defer func() {
		if err := s.stop(); err != nil {
			rep.raw("%s: %v\n", ks.spec.name, err)
		}
		rep.raw("--- %s log (race=%v) ---\n%s\n", ks.spec.name, race, s.log.text())
	}()
	if err := s.ready(ctx, 15*time.Second); err != nil {
		return kaResult{}, "", err
	}
	stop := make(chan struct{})
	done := make(chan kaResult, 1)
	pace := time.Duration(0)
	if race {
		pace = 2 * time.Millisecond
	}
	go func() { done <- kaLoad(s.port, pace, stop) }()
	finish := func(err error) (kaResult, error) {
		close(stop)
		return <-done, err
	}
	time.Sleep(500 * time.Millisecond) // the clients connect and settle: part of the workload
	if !race {
		every := kaLatencyRun / kaLatReloads
		for range kaLatReloads {
			t := time.Now()
			if err := ks.reload(ctx, s); err != nil {
				r, err := finish(err)
				return r, "", err
			}
			time.Sleep(max(0, every-time.Since(t)))
		}
		r, err := finish(nil)
		return r, fmt.Sprintf("%d reloads", kaLatReloads), err
	}
	steps := fmt.Sprintf("%d reloads", kaReloads)
	for range kaReloads {
		if err := ks.reload(ctx, s); err != nil {
			r, err := finish(err)
			return r, steps, err
		}
		time.Sleep(100 * time.Millisecond) // the clients use the new workers: part of the workload
	}
	if ks.scale != nil {
		steps += ", scale 2-4-2"
		for _, st := range [][2]int{{2, 4}, {4, 2}} {
			if err := ks.scale(ctx, s, st[0], st[1]); err != nil {
				r, err := finish(err)
				return r, steps, err
			}
			time.Sleep(500 * time.Millisecond) // load on the 4 workers: part of the workload
		}
	}
	time.Sleep(300 * time.Millisecond)
	r, err := finish(nil)
	return r, steps, err
}

// kaTable prints the keep-alive table.
func kaTable(rows []kaRow, reps int, rep *report) {
	rep.print(fmt.Sprintf("keep-alive through reloads: %d keep-alive clients, POST /submit, no retry, a new connection only after a failure or Connection: close\n", kaClients))
	rep.print(fmt.Sprintf("race: paced 2 ms, %d reloads and a scale 2-4-2 (go-systemd: restarts only), one run; latency: unpaced, %d reloads over %v,\n"+
		"%d reps round-robin over the servers: failed summed, req/s, p99 and max medians of the reps (p99, max: of every request's latency)\n",
		kaReloads, kaLatReloads, kaLatencyRun, reps))
	rep.print(fmt.Sprintf("%-20s %-26s %9s %7s %9s | %7s %9s %9s %9s\n",
		"server", "race steps", "answered", "failed", "connects", "failed", "req/s", "p99", "max"))
	for _, r := range rows {
		var failed int64
		var rps []float64
		var p99, worst []time.Duration
		for _, l := range r.lat {
			failed += l.failed
			if l.elapsed > 0 {
				rps = append(rps, float64(l.answered)/l.elapsed.Seconds())
			}
			p99, worst = append(p99, l.quantile(0.99)), append(worst, l.quantile(1))
		}
		rep.print(fmt.Sprintf("%-20s %-26s %9d %7d %9d | %7d %9.0f %9s %9s\n", r.name, r.raceSteps,
			r.race.answered, r.race.failed, r.race.connects, failed, median(rps), ms(median(p99)), ms(median(worst))))
		if r.raceErr != nil {
			rep.print(fmt.Sprintf("  %s race: %v\n", r.name, r.raceErr))
		}
		if r.race.firstErr != "" {
			rep.print(fmt.Sprintf("  %s race: first failure: %s\n", r.name, r.race.firstErr))
		}
		for i, err := range r.latErrs {
			if err != nil {
				rep.print(fmt.Sprintf("  %s latency rep %d: %v\n", r.name, i+1, err))
			}
		}
	}
	rep.print("\n")
}

package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// coldSample is one launch → serving measurement.
type coldSample struct {
	http time.Duration // launch → N distinct pids answered GET /pid
	log  time.Duration // launch → "all workers ready" line read (0: none)
	self time.Duration // the server's own "startup" field (0: none)
}

// killSample is one kill -9 of a worker → its replacement serving.
type killSample struct {
	http    time.Duration // kill → first answer from a new pid
	spawned time.Duration // kill → "spawned worker" line for the slot
	ready   time.Duration // kill → "worker ready" line for the new pid
	boot    time.Duration // the new worker's own "boot" field
	failed  int           // polls that failed meanwhile (reset, EOF, 5xx)
}

// coldStart launches spec unpinned and measures it until every worker has
// answered. The server is left running for a kill test; the caller stops it.
func coldStart(ctx context.Context, spec serverSpec) (*server, coldSample, error) {
	var cs coldSample
	s, err := launch(spec, false)
	if err != nil {
		return nil, cs, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Connections made before a worker is ready wait in the supervisor's
	// queue (rr) or the backlog: a long per-request timeout is right.
	r, err := pollPIDs(ctx, s.port, spec.procs, nil, time.Second)
	if err != nil {
		return s, cs, fmt.Errorf("bench: cold start of %s: %w", spec.name, err)
	}
	cs.http = r.at.Sub(s.started)
	if spec.logged {
		e, _, err := s.log.wait(ctx, 0, s.done, func(e logEvent) bool { return e.msg() == "all workers ready" })
		if err != nil {
			return s, cs, fmt.Errorf("bench: cold start of %s: no \"all workers ready\": %w", spec.name, err)
		}
		cs.log = e.at.Sub(s.started)
		cs.self, _ = e.duration("startup")
	}
	s.track()
	return s, cs, nil
}

// killWorker kills the first worker of a serving s with SIGKILL and
// measures until its replacement serves.
func killWorker(ctx context.Context, s *server) (killSample, error) {
	var ks killSample
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	// Find the slot of the victim from its "worker ready" line.
	pids := s.workers()
	if len(pids) < 2 {
		return ks, fmt.Errorf("bench: kill test: %s has %d workers", s.spec.name, len(pids))
	}
	victim := pids[0]
	slot := 0
	if s.spec.logged {
		ready, _, err := s.log.wait(ctx, 0, s.done, func(e logEvent) bool {
			return e.msg() == "worker ready" && e.int("pid") == victim
		})
		if err != nil {
			return ks, fmt.Errorf("bench: kill test: no \"worker ready\" for pid %d: %w", victim, err)
		}
		slot = ready.int("slot")
	}
	exclude := map[int]bool{}
	for _, p := range pids {
		exclude[p] = true
	}
	from := s.log.len()

	killed := time.Now()
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		return ks, fmt.Errorf("bench: kill test: %w", err)
	}
	// A connection handed to the dying worker may be lost (Node's rr does
	// that): give up on it after 100ms; it is counted in failed.
	r, err := pollPIDs(ctx, s.port, 1, exclude, pollTimeoutKill)
	if err != nil {
		return ks, fmt.Errorf("bench: kill test: replacement of slot %d: %w", slot, err)
	}
	ks.http = r.at.Sub(killed)
	ks.failed = r.failed + r.refused
	if !s.spec.logged { // no log lines to time (fasthttp-prefork)
		s.track()
		return ks, nil
	}

	isNew := func(e logEvent) bool { return e.int("slot") == slot && !exclude[e.int("pid")] }
	if e, _, err := s.log.wait(ctx, from, s.done, func(e logEvent) bool { return e.msg() == "spawned worker" && isNew(e) }); err == nil {
		ks.spawned = e.at.Sub(killed)
	}
	if e, _, err := s.log.wait(ctx, from, s.done, func(e logEvent) bool { return e.msg() == "worker ready" && isNew(e) }); err == nil {
		ks.ready = e.at.Sub(killed)
		ks.boot, _ = e.duration("boot")
	}
	s.track()
	return ks, nil
}

// pollTimeoutKill bounds one poll of the kill test.
const pollTimeoutKill = 100 * time.Millisecond

// lifecycle holds every sample, by row label.
type lifecycle struct {
	order []string
	cold  map[string][]coldSample
	kill  map[string][]killSample
	notes []string
}

// runLifecycle measures cold starts of the supervisor (rr; 2 and 4
// workers), of the references, of Node's cluster app and of the fasthttp
// worker under the supervisor, and kill → replacement, samples times each,
// every launch unpinned. only, if not nil, keeps the rows of the servers it
// names.
func runLifecycle(ctx context.Context, all []serverSpec, only map[string]bool, samples int, rep *report) (*lifecycle, error) {
	lc := &lifecycle{cold: map[string][]coldSample{}, kill: map[string][]killSample{}}
	byName := map[string]serverSpec{}
	for _, sp := range all {
		byName[sp.name] = sp
	}
	rr4 := byName["rr"]
	rr4.procs = 4
	cmd2 := rr4.command
	rr4.command = func(port int) []string {
		argv := cmd2(port)
		for i := range argv {
			if argv[i] == "-workers" {
				argv[i+1] = "4"
			}
		}
		return argv
	}
	type row struct {
		label string
		spec  serverSpec
		kill  bool
	}
	rows := []row{
		{"rr, 2 workers", byName["rr"], true},
		{"rr, 4 workers", rr4, false},
		{"go-single (reference)", byName["go-single"], false},
		{"node-rr, 2 workers (reference)", byName["node-rr"], true},
		{"prefork-node-rr, 2 workers", byName["prefork-node-rr"], true},
		{"prefork-node-shared, 2 workers", byName["prefork-node-shared"], true},
		{"prefork-node-reuseport, 2 workers", byName["prefork-node-reuseport"], true},
		{"singlebinary, 2 workers", byName["singlebinary"], true},
		{"fasthttp-prefork, 2 workers (reference)", byName["fasthttp-prefork"], true},
		{"fasthttp-rr, 2 workers", byName["fasthttp-rr"], true},
		{"fasthttp-shared, 2 workers", byName["fasthttp-shared"], true},
		{"fasthttp-reuseport, 2 workers", byName["fasthttp-reuseport"], true},
	}
	if only != nil {
		rows = slices.DeleteFunc(rows, func(r row) bool { return !only[r.spec.name] })
	}
	for _, r := range rows {
		lc.order = append(lc.order, r.label)
	}
	// One unmeasured launch of each first: page cache, dynamic loader.
	for _, r := range rows {
		if s, _, err := coldStart(ctx, r.spec); s != nil {
			s.stop()
			if err != nil {
				return lc, err
			}
		}
	}
	for i := 0; i < samples; i++ {
		for _, r := range rows {
			s, cs, err := coldStart(ctx, r.spec)
			if err != nil {
				if s != nil {
					s.stop()
				}
				return lc, err
			}
			lc.cold[r.label] = append(lc.cold[r.label], cs)
			if r.kill {
				ks, err := killWorker(ctx, s)
				if err != nil {
					s.stop()
					return lc, err
				}
				lc.kill[r.label] = append(lc.kill[r.label], ks)
			}
			serr := s.stop()
			if serr != nil {
				lc.notes = append(lc.notes, serr.Error())
			}
			if s.log.count("worker exited unexpectedly") > boolInt(r.kill) {
				lc.notes = append(lc.notes, fmt.Sprintf("%s: unexpected worker exits during the lifecycle sample", r.label))
			}
			rep.raw("lifecycle %s sample %d: %+v\n%s", r.label, i+1, cs, s.log.text())
			time.Sleep(50 * time.Millisecond)
		}
	}
	return lc, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

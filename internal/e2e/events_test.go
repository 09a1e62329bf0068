package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// event is one event of a supervisor's stream (`ctl events`), as recorded.
type event struct {
	control.Event
	seq int       // position in the recording, from 0
	at  time.Time // when the harness received it
}

func (e event) kind() control.EventKind { return e.Kind }

// int returns field k as the wire has it (control.Event.Fields) as an int:
// 0 if it is missing or not a number.
func (e event) int(k string) int {
	switch v := e.Fields()[k].(type) {
	case int:
		return v
	case int64:
		return int(v)
	case uint64:
		return int(v)
	case float64:
		return int(v)
	}
	return 0
}

// str returns field k as a string: "" if it is missing or not a string.
func (e event) str(k string) string {
	v, _ := e.Fields()[k].(string)
	return v
}

// recorder subscribes to a supervisor's event stream and keeps every event
// in the order received. The subscription starts once the control socket
// answers, so the first events of a run may come before it: wait for
// subscribed before doing what makes the events a test waits for.
type recorder struct {
	cancel context.CancelFunc
	exited chan struct{} // closed when follow returns

	mu      sync.Mutex
	events  []event
	ended   error         // why the stream ended; nil while it runs
	changed chan struct{} // closed (and replaced) when events or ended change
}

// errNoControl ends the recording of a supervisor run with -control none.
var errNoControl = errors.New("e2e: the supervisor has no control socket")

// record follows the events of the supervisor whose control socket is path,
// until stop; gone is closed when the supervisor exits. An empty path
// records nothing.
func record(path string, gone <-chan struct{}) *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{cancel: cancel, exited: make(chan struct{}), changed: make(chan struct{})}
	if path == "" {
		close(r.exited)
		r.end(errNoControl)
		return r
	}
	go func() {
		defer close(r.exited)
		r.end(r.follow(ctx, path, gone))
	}()
	return r
}

// follow subscribes once the socket answers (polling for it for up to 10s)
// and records events until the stream ends. It never subscribes twice: a
// second subscription would hide a gap.
func (r *recorder) follow(ctx context.Context, path string, gone <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := control.Events(ctx, path, func(e control.Event) error {
			r.add(e)
			return nil
		})
		if err == nil {
			return errors.New("e2e: event stream ended: the supervisor stopped")
		}
		// Before the supervisor creates its socket the path does not exist;
		// ECONNREFUSED is a socket file not (or no longer) listened on.
		if r.count() > 0 || !(errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-gone:
			return fmt.Errorf("e2e: the supervisor exited before its control socket answered: %w", err)
		case <-time.After(5 * time.Millisecond): // polling for the socket
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: no control socket within 10s: %w", err)
		}
	}
}

func (r *recorder) add(e control.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{Event: e, seq: len(r.events), at: time.Now()})
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) end(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = err
	close(r.changed)
	r.changed = make(chan struct{})
}

// stop ends the subscription and waits for it.
func (r *recorder) stop() {
	r.cancel()
	<-r.exited
}

// count is the number of events recorded so far: the seq the next one gets.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// all returns the recorded events of kind.
func (r *recorder) all(kind control.EventKind) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, e := range r.events {
		if e.kind() == kind {
			out = append(out, e)
		}
	}
	return out
}

// wait returns the first recorded event (old or new) that matches; false
// after d, or at once when the stream has ended without one.
func (r *recorder) wait(d time.Duration, match func(event) bool) (event, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for i := 0; ; {
		r.mu.Lock()
		for ; i < len(r.events); i++ {
			if e := r.events[i]; match(e) {
				r.mu.Unlock()
				return e, true
			}
		}
		ended, changed := r.ended, r.changed
		r.mu.Unlock()
		if ended != nil {
			return event{}, false
		}
		select {
		case <-changed:
		case <-timer.C:
			return event{}, false
		}
	}
}

// String lists the recorded events, one a line, and why the stream ended.
func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		line, _ := json.Marshal(e.Event)
		fmt.Fprintf(&b, "%s\n", line)
	}
	if r.ended != nil {
		fmt.Fprintf(&b, "(%v)\n", r.ended)
	}
	return b.String()
}

// waitEvent waits up to d for an event of kind that matches (a nil match
// takes any) and returns it. Events recorded before the call count: to
// wait for one caused by an action, match on what only it can have (a new
// pid, or seq >= the count taken before the action).
func (s *sup) waitEvent(d time.Duration, kind control.EventKind, match func(event) bool) event {
	s.t.Helper()
	e, ok := s.events.wait(d, func(e event) bool { return e.kind() == kind && (match == nil || match(e)) })
	if !ok {
		s.t.Fatalf("no %q event within %s; recorded:\n%s", kind, d, s.events)
	}
	return e
}

// subscribed waits until the harness follows the supervisor's events: from
// then on, none is missed.
func (s *sup) subscribed() {
	s.t.Helper()
	s.waitEvent(10*time.Second, "subscribed", nil)
}

// waitReady waits up to d until every worker of the starting supervisor is
// ready: at once if its status says so once the subscription is in place,
// else the running event, which then surely comes after the subscription.
func (s *sup) waitReady(d time.Duration) {
	s.t.Helper()
	s.subscribed()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdStatus})
	if err != nil || !resp.OK {
		s.t.Fatalf("status: %v %s", err, resp.Error)
	}
	for _, w := range resp.Status.Workers {
		if w.State != control.StateReady {
			s.waitEvent(d, control.EventRunning, nil)
			return
		}
	}
	if len(resp.Status.Workers) == 0 {
		s.t.Fatal("status lists no workers")
	}
}

package proctest

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

// Event is one event of a supervisor's stream (`ctl events`), as recorded.
type Event struct {
	control.Event
	Pos int       // position in the recording, from 0
	At  time.Time // when it was received
}

// Int returns field k as the wire has it (control.Event.Fields) as an int:
// 0 if it is missing or not a number.
func (e Event) Int(k string) int {
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

// Str returns field k as the wire has it as a string: "" if it is missing
// or not a string.
func (e Event) Str(k string) string {
	v, _ := e.Fields()[k].(string)
	return v
}

// Events subscribes to a supervisor's event stream and keeps every event
// in the order received. The subscription starts once the control socket
// answers, so the first events of a run may come before it: wait for the
// "subscribed" event before doing what makes the events a test waits for.
type Events struct {
	cancel context.CancelFunc
	exited chan struct{} // closed when follow returns

	mu      sync.Mutex
	events  []Event
	ended   error         // why the stream ended; nil while it runs
	changed chan struct{} // closed (and replaced) when events or ended change
}

// ErrNoControl ends the recording of a supervisor run without a control
// socket.
var ErrNoControl = errors.New("proctest: the supervisor has no control socket")

// Follow records the events of the supervisor whose control socket is
// path, until Stop; gone is closed when the supervisor exits (Proc.Done).
// An empty path records nothing.
func Follow(path string, gone <-chan struct{}) *Events {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Events{cancel: cancel, exited: make(chan struct{}), changed: make(chan struct{})}
	if path == "" {
		close(r.exited)
		r.end(ErrNoControl)
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
func (r *Events) follow(ctx context.Context, path string, gone <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := control.Events(ctx, path, func(e control.Event) error {
			r.add(e)
			return nil
		})
		if err == nil {
			return errors.New("proctest: event stream ended: the supervisor stopped")
		}
		// Before the supervisor creates its socket the path does not exist;
		// ECONNREFUSED is a socket file not (or no longer) listened on.
		if r.Count() > 0 || !(errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-gone:
			return fmt.Errorf("proctest: the supervisor exited before its control socket answered: %w", err)
		case <-time.After(5 * time.Millisecond): // polling for the socket
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("proctest: no control socket within 10s: %w", err)
		}
	}
}

func (r *Events) add(e control.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, Event{Event: e, Pos: len(r.events), At: time.Now()})
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Events) end(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = err
	close(r.changed)
	r.changed = make(chan struct{})
}

// Stop ends the subscription and waits for it.
func (r *Events) Stop() {
	r.cancel()
	<-r.exited
}

// Count is the number of events recorded so far: the Pos the next one gets.
func (r *Events) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// All returns the recorded events of kind.
func (r *Events) All(kind control.EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// Wait returns the first recorded event (old or new) that matches; false
// after d, or at once when the stream has ended without one.
func (r *Events) Wait(d time.Duration, match func(Event) bool) (Event, bool) {
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
			return Event{}, false
		}
		select {
		case <-changed:
		case <-timer.C:
			return Event{}, false
		}
	}
}

// String lists the recorded events, one a line, and why the stream ended.
func (r *Events) String() string {
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
